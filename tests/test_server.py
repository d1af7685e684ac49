"""`t2i serve` over HTTP on loopback, with a tiny real model: the JSON API, its limits, the queue
(503 + Retry-After, timeout), batching of compatible requests, and the CLI wiring."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import png_header_only, write_tiny_model

from t2i.cli import build_parser
from t2i.families import load
from t2i.params import PNG_KEY, GenerationParams
from t2i.server import Limits, ServerConfig, make_server
from t2i.server.batching import generate_batch, png_bytes

PROMPT = "a red circle above a blue square"


def make_model(folder):
    vocab = "a red blue circle square above below".split()
    return write_tiny_model(folder, steps=2, vocab=vocab)


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    return {"tiny": load(make_model(tmp_path_factory.mktemp("model")))}


class Running:
    """A server on a free loopback port, served from a thread; `gate` can hold the worker."""

    def __init__(self, pipes, **config):
        limits = Limits(max_steps=50, max_n=4, max_side=64, max_prompt=200, max_body=65536)
        self.server = make_server(pipes, ServerConfig(port=0, limits=limits, **config))
        self.gate = threading.Event()
        self.gate.set()
        serve_batch = self.server.queue._serve
        self.server.queue._serve = lambda batch: (self.gate.wait(10), serve_batch(batch))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body bytes); body may be a dict (sent as JSON) or raw bytes."""
        host, port = self.server.server_address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=30)
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        if method == "POST":
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        out = resp.status, dict(resp.getheaders()), resp.read()
        conn.close()
        return out

    def post(self, path, body):
        status, headers, data = self.request("POST", path, body)
        return status, headers, json.loads(data) if "json" in headers["Content-Type"] else data

    def close(self):
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(pipes):
    running = Running(pipes, max_queue=32, max_batch=8)
    yield running
    running.close()


def decode(image: dict) -> tuple[GenerationParams, np.ndarray]:
    png = Image.open(io.BytesIO(base64.b64decode(image["png_base64"])))
    params = GenerationParams.from_json(json.dumps(image["params"]), "the reply's params")
    assert GenerationParams.from_json(png.text[PNG_KEY]) == params
    return params, np.asarray(png).astype(int)


def test_twenty_concurrent_generate_requests_all_succeed(server):
    def one(seed):
        return server.post("/api/generate", {"prompt": PROMPT, "seed": seed, "n": 1 + seed % 2})

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert [status for status, _, _ in answers] == [200] * 20
    for seed, (_, _, body) in enumerate(answers):
        params = [decode(im)[0] for im in body["images"]]
        assert [p.seed for p in params] == list(range(seed, seed + 1 + seed % 2))
        assert all(
            p.prompt == PROMPT and p.model == server.server.pipes["tiny"].name for p in params
        )
    assert max(body["batch_images"] for _, _, body in answers) > 1  # some were batched


def test_a_burst_of_64_connections_is_answered(server):
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(lambda _: server.request("GET", "/api/health")[0], range(64)))
    assert statuses == [200] * 64


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty body"),
    (b"[1, 2]", 400, "JSON object"),
    ({"prompt": PROMPT, "model": "nope"}, 400, "unknown model 'nope'"),
    ({"prompt": PROMPT, "sampler": "eulr"}, 400, "unknown sampler 'eulr'"),
    ({"prompt": PROMPT, "n": 10**6}, 400, "max_n"),
    ({"prompt": PROMPT, "width": 10**5}, 400, "max_side"),
    ({"prompt": PROMPT, "width": 15}, 400, "multiple of"),
    ({"prompt": PROMPT, "steps": 10**4}, 400, "max_steps"),
    ({"prompt": "a " * 200}, 400, "max_prompt"),
    ({"prompt": 5}, 400, "prompt must be"),
    ({"prompt": PROMPT, "steps": "ten"}, 400, "steps must be"),
    ({"prompt": PROMPT, "n": True}, 400, "n must be"),
    ({"prompt": PROMPT, "guidance": "high"}, 400, "guidance must be"),
    ({"prompt": PROMPT, "seed": 1.5}, 400, "seed must be"),
    ({"prompt": PROMPT, "seed": "lucky"}, 400, "seed must be"),
    ({"prompt": PROMPT, "colour": "red"}, 400, "unknown field"),
    ({"prompt": PROMPT, "guidance_interval": [3, 1]}, 400, "guidance interval must be two"),
    ({"prompt": PROMPT, "guidance_interval": "fast"}, 400, "guidance interval must be 'all'"),
    ({"prompt": PROMPT, "cads_noise": -1}, 400, "cads_noise must be a number in [0, 10]"),
    ({"prompt": PROMPT, "cads_noise": "much"}, 400, "cads_noise must be"),
    ({"prompt": PROMPT, "cads_noise": 1, "cads_interval": [0, 9]}, 400, "0 < lo < hi"),
    ({"prompt": PROMPT, "cads_noise": 1, "cads_interval": [1] * 9}, 400, "cads_interval must be"),
    ({"negative": "x"}, 400, "missing field 'prompt'"),
    ({"prompt": PROMPT, "n": 2, "format": "png"}, 400, "format"),
    (b"x" * 70000, 413, "max_body"),
]


@pytest.mark.parametrize("body,status,message", BAD)
def test_bad_requests_get_a_clear_4xx_and_the_server_still_answers(server, body, status, message):
    for path in ("/api/generate", "/api/jobs"):
        got, headers, answer = server.post(path, body)
        assert (got, message in answer["error"]) == (status, True), answer
    assert server.request("GET", "/api/health")[0] == 200


def test_unknown_routes_and_jobs_are_404_and_health_lists_models(server):
    assert server.request("GET", "/nothing")[0] == 404
    assert server.request("GET", "/api/jobs/999999")[0] == 404
    status, _, body = server.request("GET", "/api/health")
    assert status == 200 and json.loads(body)["models"] == ["tiny"]
    models = json.loads(server.request("GET", "/api/models")[2])
    assert models["models"][0]["steps"] == 2 and "ddim" in models["samplers"]
    assert models["models"][0]["family"] == "diffusion"
    assert models["models"][0]["supports"]["inpainting"] is True
    schema = json.loads(server.request("GET", "/api/openapi.json")[2])
    assert schema["paths"]["/api/generate"]["post"]["requestBody"]["required"]
    assert server.request("GET", "/")[2].startswith(b"<!doctype html>")


def test_png_format_returns_the_png_with_its_parameters(server):
    status, headers, png = server.post("/api/generate", {"prompt": PROMPT, "format": "png"})
    assert status == 200 and headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(png))
    assert image.size == (16, 16)
    assert json.loads(image.text[PNG_KEY]) == json.loads(headers["X-T2I-Params"])


def test_guidance_interval_is_taken_and_reported(server):
    body = {"prompt": PROMPT, "seed": 3, "guidance_interval": [1.0, 50.0]}
    status, _, answer = server.post("/api/generate", body)
    assert status == 200 and answer["images"][0]["params"]["guidance_interval"] == [1.0, 50.0]


def test_cads_is_taken_and_reported(server):
    body = {"prompt": PROMPT, "seed": 3, "cads_noise": 0.5, "cads_interval": [1.0, 50.0]}
    status, _, answer = server.post("/api/generate", body)
    params = answer["images"][0]["params"]
    assert status == 200 and (params["cads_noise"], params["cads_interval"]) == (0.5, [1.0, 50.0])
    models = json.loads(server.request("GET", "/api/models")[2])["models"]
    assert models[0]["supports"]["cads"] is True and models[0]["cads_noise"] == 0.0


def test_random_seed_is_drawn_and_reported(server):
    seeds = set()
    for _ in range(2):
        _, _, body = server.post("/api/generate", {"prompt": PROMPT, "seed": "random"})
        seeds.add(body["images"][0]["params"]["seed"])
    assert len(seeds) == 2


def test_jobs_report_progress_and_finish(server):
    status, _, body = server.post("/api/jobs", {"prompt": PROMPT, "steps": 3})
    assert status == 202
    job = server.server.queue.get(body["id"])
    assert job.done.wait(20)
    answer = json.loads(server.request("GET", body["status_url"])[2])
    assert (answer["status"], answer["step"], answer["steps"]) == ("done", 3, 3)
    assert len(answer["images"]) == 1


def test_full_queue_answers_503_with_retry_after(pipes):
    running = Running(pipes, max_queue=2, max_batch=1)
    try:
        running.gate.clear()  # the worker holds its first job; the next two fill the queue
        answers = [running.post("/api/jobs", {"prompt": PROMPT})]
        first = running.server.queue.get(answers[0][2]["id"])
        deadline = time.monotonic() + 20
        while first.status != "running" and time.monotonic() < deadline:  # a loaded machine
            time.sleep(0.01)
        answers += [running.post("/api/jobs", {"prompt": PROMPT}) for _ in range(3)]
        statuses = [status for status, _, _ in answers]
        assert statuses.count(202) == 3 and statuses[-1] == 503, statuses
        assert int(answers[-1][1]["Retry-After"]) >= 1
        running.gate.set()
        queued = [running.server.queue.get(body["id"]) for _, _, body in answers[:3]]
        assert all(job.done.wait(20) for job in queued)
        assert running.post("/api/generate", {"prompt": PROMPT})[0] == 200
    finally:
        running.close()


def test_a_request_past_the_timeout_gets_504_and_the_server_goes_on(pipes):
    running = Running(pipes, timeout=0.3)
    try:
        running.gate.clear()
        first = running.post("/api/jobs", {"prompt": PROMPT})[2]["id"]
        threading.Timer(0.6, running.gate.set).start()
        status, _, body = running.post("/api/generate", {"prompt": PROMPT})
        assert status == 504 and "timeout" in body["error"]
        assert running.server.queue.get(first).status == "cancelled"
        assert running.post("/api/generate", {"prompt": PROMPT})[0] == 200
    finally:
        running.close()


@pytest.mark.parametrize("max_batch,expected", [(8, [3, 3, 3, 1]), (1, [1, 1, 1, 1])])
def test_compatible_queued_requests_share_one_sampler_call(pipes, max_batch, expected):
    running = Running(pipes, max_batch=max_batch)
    try:
        running.gate.clear()
        blocker = running.post("/api/jobs", {"prompt": PROMPT, "guidance": 1.0})[2]["id"]
        bodies = [{"prompt": p, "seed": s} for p, s in [(PROMPT, 1), ("a blue circle", 2)]]
        bodies += [{"prompt": PROMPT, "seed": 3}, {"prompt": PROMPT, "seed": 1, "steps": 3}]
        ids = [running.post("/api/jobs", b)[2]["id"] for b in bodies]
        running.gate.set()
        jobs = [running.server.queue.get(i) for i in [blocker, *ids]]
        assert all(job.done.wait(20) for job in jobs)
        assert [job.batch_images for job in jobs[1:]] == expected
        # batched or alone, an image is the one Pipeline.generate makes alone
        p, png = jobs[2].images[0]
        alone = png_bytes(pipes["tiny"].generate(p)[0], p)
        assert np.abs(pixels(png) - pixels(alone)).max() <= 1  # one 8-bit level of rounding
    finally:
        running.close()


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png))).astype(int)


def test_generate_batch_with_different_prompts_equals_each_image_alone(pipes):
    pipe = pipes["tiny"]
    items = [
        pipe.params(PROMPT, seed=4, steps=3, sampler="euler_ancestral"),
        pipe.params("a blue square", seed=9, steps=3, sampler="euler_ancestral"),
    ]
    batch = generate_batch(pipe, items)
    for i, p in enumerate(items):
        torch.testing.assert_close(batch[i : i + 1], pipe.generate(p), atol=2e-4, rtol=0)
    assert (batch[0] - batch[1]).abs().max() > 0.05
    with pytest.raises(ValueError, match="more than prompt and seed"):
        generate_batch(pipe, [items[0], pipe.params(PROMPT, steps=2)])


def test_serve_cli_flags_map_onto_the_config():
    args = build_parser().parse_args(["serve", "--model", "a", "--model", "b", "--max-batch", "1"])
    assert args.model == ["a", "b"] and args.max_batch == 1 and args.host == "127.0.0.1"
    bad = build_parser().parse_args(["serve", "--model", "a", "--max-n", "0"])
    with pytest.raises(ValueError, match="--max-n must be >= 1"):
        bad.func(bad)


def test_serve_offers_the_bundled_models_with_the_default_first():
    from t2i.server.cli import served_models

    assert served_models(None)[0] == "shapes" and {"fashion", "emoji"} <= set(served_models(None))
    assert served_models(["b", "a"]) == ["b", "a"]


def b64png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_inpainting_keeps_the_unmasked_pixels_and_removes_its_uploads(server):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255  # repaint the centre
    body = {"prompt": PROMPT, "init": b64png(init), "mask": b64png(Image.fromarray(mask))}
    status, _, answer = server.post("/api/generate", body)
    assert status == 200, answer
    params, out = decode(answer["images"][0])
    assert (params.width, params.height, params.strength) == (16, 16, 1.0)
    keep = mask == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])
    assert np.abs(out[~keep] - np.asarray(init)[~keep]).mean() > 5  # the centre was redrawn
    assert list(server.server.upload_dir.iterdir()) == []


def test_img2img_follows_strength(server):
    init = b64png(Image.new("RGB", (16, 16), (200, 30, 30)))
    red = np.array([200, 30, 30])
    dist = {}
    for strength in (0.0, 1.0):
        body = {"prompt": PROMPT, "init": init, "strength": strength, "steps": 4}
        status, _, answer = server.post("/api/generate", body)
        assert status == 200, answer
        dist[strength] = np.abs(decode(answer["images"][0])[1] - red).mean()
    assert dist[0.0] <= 1 and dist[1.0] > 10


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"mask": "AAAA"}, "needs the image"),
        ({"init": "not base64!"}, "base64-encoded"),
        ({"init": base64.b64encode(b"plain text").decode()}, "base64-encoded"),
        ({"init": "SMALL", "mask": "BIG"}, "mask is 32x32"),
        ({"init": "SMALL", "strength": 2}, "strength must be in [0, 1]"),
        ({"init": "SMALL", "mask": "SMALL", "resample": 100}, "max_resample"),
        ({"init": "SMALL", "mask": "not base64!"}, "base64-encoded"),  # the saved init goes too
        ({"init": "BMP"}, "base64-encoded"),  # a format outside PNG / JPEG / WebP
        ({"init": "HUGE"}, "13000x13000"),  # refused from its header, never decoded
    ],
)
def test_bad_edit_requests_are_4xx(server, extra, message):
    images = {"SMALL": b64png(Image.new("RGB", (16, 16))), "BIG": b64png(Image.new("L", (32, 32)))}
    bmp = io.BytesIO()
    Image.new("RGB", (16, 16)).save(bmp, format="BMP")
    images["BMP"] = base64.b64encode(bmp.getvalue()).decode()
    images["HUGE"] = base64.b64encode(png_header_only(13000, 13000)).decode()
    body = {"prompt": PROMPT, **{k: images.get(v, v) for k, v in extra.items()}}
    status, _, answer = server.post("/api/generate", body)
    assert (status, message in answer["error"]) == (400, True), answer
    assert list(server.server.upload_dir.iterdir()) == []


def test_an_autoregressive_model_is_served_with_its_own_sampler(tmp_path):
    from tiny_models import write_tiny_autoregressive_model

    pipes = {"ar": load(write_tiny_autoregressive_model(tmp_path / "ar"))}
    running = Running(pipes, max_queue=4, max_batch=4)
    try:
        (model,) = json.loads(running.request("GET", "/api/models")[2])["models"]
        assert (model["samplers"], model["sampler"], model["steps"]) == (
            ["autoregressive"],
            "autoregressive",
            64,
        )
        assert model["family"] == "autoregressive" and model["supports"]["steps"] is False
        assert not model["supports"]["img2img"] and not model["supports"]["inversion"]
        request = {"prompt": PROMPT, "model": "ar", "n": 2, "seed": 0}
        status, _, body = running.post("/api/generate", request)
        assert status == 200 and [decode(im)[0].seed for im in body["images"]] == [0, 1]
        status, _, body = running.post(
            "/api/generate", {"prompt": PROMPT, "model": "ar", "sampler": "ddim"}
        )
        assert status == 400 and "the only sampler is 'autoregressive'" in body["error"]
    finally:
        running.close()


def test_an_aligndraw_model_is_served_and_refuses_guidance(tmp_path):
    from tiny_models import write_tiny_draw_model

    running = Running({"draw": load(write_tiny_draw_model(tmp_path / "d"))}, max_queue=4)
    try:
        (model,) = json.loads(running.request("GET", "/api/models")[2])["models"]
        assert (model["family"], model["sampler"], model["steps"]) == ("draw", "draw", 4)
        assert model["guidance"] == 1.0 and model["supports"]["steps"] is False
        status, _, body = running.post("/api/generate", {"prompt": PROMPT, "n": 2, "seed": 3})
        assert status == 200 and [decode(im)[0].seed for im in body["images"]] == [3, 4]
        status, _, body = running.post("/api/generate", {"prompt": PROMPT, "guidance": 4})
        assert status == 400 and "no classifier-free guidance" in body["error"]
    finally:
        running.close()


def test_a_gan_is_served_in_one_step_and_refuses_more(tmp_path):
    from tiny_models import write_tiny_gan_model

    running = Running({"gan": load(write_tiny_gan_model(tmp_path / "g"))}, max_queue=4)
    try:
        (model,) = json.loads(running.request("GET", "/api/models")[2])["models"]
        assert (model["family"], model["sampler"], model["steps"]) == ("gan", "gan", 1)
        assert model["guidance"] == 1.0 and model["supports"]["steps"] is False
        status, _, body = running.post("/api/generate", {"prompt": PROMPT, "n": 2, "seed": 3})
        assert status == 200 and [decode(im)[0].seed for im in body["images"]] == [3, 4]
        status, _, body = running.post("/api/generate", {"prompt": PROMPT, "steps": 20})
        assert status == 400 and "a GAN draws in 1 step" in body["error"]
    finally:
        running.close()


def test_a_job_names_the_words_its_model_cannot_read(server):
    status, _, answer = server.post("/api/generate", {"prompt": "a turquoise circle", "n": 1})
    assert status == 200 and answer["unknown_words"] == ["turquoise"]
    status, _, answer = server.post("/api/generate", {"prompt": PROMPT, "negative": "minuscule"})
    assert status == 200 and answer["unknown_words"] == ["minuscule"]


def test_the_last_seed_of_a_request_is_checked_at_admission(server):
    body = {"prompt": PROMPT, "seed": 2**63 - 1, "n": 2}
    status, _, answer = server.post("/api/generate", body)
    # one bound for every request, the schema's: the top seed leaves room for max_n images
    assert status == 400 and "is above 9223372036854775804" in answer["error"]
    top = {**body, "seed": 2**63 - 4, "n": 4}  # max_n = 4: its last image's seed is 2**63 - 1
    assert server.post("/api/generate", top)[0] == 200


def test_a_job_that_breaks_in_the_worker_fails_alone(pipes):
    """The jobs batched with a failing one are served without it (here the failure is a seed
    past the limit put straight on the queue, which admission would have refused)."""
    running = Running(pipes, max_batch=8)
    try:
        running.gate.clear()
        blocker = running.post("/api/jobs", {"prompt": PROMPT, "guidance": 1.0})[2]["id"]
        ids = [running.post("/api/jobs", {"prompt": PROMPT, "seed": s})[2]["id"] for s in (1, 2)]
        queue = running.server.queue
        bad = queue.get(ids[0])
        bad.params = dataclasses.replace(bad.params, seed=2**63 - 1)
        bad.n = 2
        running.gate.set()
        jobs = [queue.get(i) for i in [blocker, *ids]]
        assert all(job.done.wait(20) for job in jobs)
        assert [job.status for job in jobs] == ["done", "failed", "done"]
        assert "seed" in jobs[1].error
    finally:
        running.close()


def test_the_prompt_cache_keeps_the_most_recent_prompts_only(pipes, monkeypatch):
    import t2i.protocol

    monkeypatch.setattr(t2i.protocol, "MAX_CACHED_PROMPTS", 3)
    pipe = pipes["tiny"]
    pipe._text_cache.clear()
    prompts = ["a red circle", "a blue circle", "a red square", "a blue square", "a red circle"]
    for prompt in prompts:
        pipe.encode_text([prompt])
    assert list(pipe._text_cache) == ["a red square", "a blue square", "a red circle"]


def test_learnt_words_of_the_embedding_folder_are_listed_and_recorded(tmp_path):
    from t2i.adapters import embeddings

    pipe = load(make_model(tmp_path / "model"))
    enc = pipe.text_encoder
    meta = embeddings.EmbeddingMeta("teal", "tiny", embeddings.text_hash(enc), 1)
    embeddings.save(tmp_path / "words" / "teal.safetensors", torch.randn(1, enc.dim), meta)
    running = Running({"tiny": pipe}, embedding_dir=str(tmp_path / "words"))
    try:
        (model,) = json.loads(running.request("GET", "/api/models")[2])["models"]
        assert model["embeddings"] == ["teal"]
        status, _, answer = running.post("/api/generate", {"prompt": "a teal circle", "steps": 1})
        assert status == 200, answer
        params, _ = decode(answer["images"][0])
        assert [word for word, _ in params.embeddings] == ["teal"]
    finally:
        running.close()
