"""A1111's HTTP API (t2i/server/a1111_api.py) driven by a client no one here wrote: the
`webuiapi` package, against a running t2i server on a tiny model."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from test_server import Running, make_model

from t2i import load
from t2i.a1111 import parse_parameters

webuiapi = pytest.importorskip("webuiapi")  # a test dependency (pyproject's test extra)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    pipe = load(make_model(tmp_path_factory.mktemp("model")))
    server = Running({"tiny": pipe, "other": pipe}, max_queue=8, max_batch=4)
    yield server
    server.close()


@pytest.fixture(scope="module")
def api(running):
    host, port = running.server.server_address[:2]
    return webuiapi.WebUIApi(host=host, port=port, sampler="Euler a", steps=2)


def test_webuiapi_lists_samplers_and_models_and_switches_model(api):
    names = [s["name"] for s in api.get_samplers()]
    assert {"Euler a", "DDIM", "DPM++ 2M"} <= set(names)
    assert [m["title"] for m in api.get_sd_models()] == ["tiny", "other"]
    assert api.get_options()["sd_model_checkpoint"] == "tiny"
    api.set_options({"sd_model_checkpoint": "other"})
    assert api.get_options()["sd_model_checkpoint"] == "other"
    api.set_options({"sd_model_checkpoint": "tiny"})


def test_webuiapi_txt2img_draws_with_a1111_names_and_reports_them(api):
    request = dict(prompt="a red circle", negative_prompt="blue", cfg_scale=2.5, steps=2)
    request |= dict(width=16, height=16)
    result = api.txt2img(**request, seed=3, batch_size=2)
    assert len(result.images) == 2 and result.images[0].size == (16, 16)
    assert result.info["all_seeds"] == [3, 4] and result.info["sampler_name"] == "Euler a"
    fields = parse_parameters(result.info["infotexts"][1])
    assert fields["Seed"] == "4" and fields["CFG scale"] == "2.5" and fields["negative"] == "blue"
    assert "eta" in result.info["ignored"]  # sent by the client, no counterpart: said so
    batches = api.txt2img(**request, seed=3, batch_size=1, n_iter=2)
    assert batches.info["all_seeds"] == [3, 4]  # A1111's batch count: one batch after another
    for one, other in zip(batches.images, result.images):
        assert np.array_equal(np.asarray(one), np.asarray(other))
    again = api.txt2img(**request, seed=4)  # the second image alone, from its own seed
    assert np.array_equal(np.asarray(again.image), np.asarray(result.images[1]))


def test_webuiapi_img2img_with_a_mask(api):
    init = Image.new("RGB", (16, 16), (200, 30, 30))
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))  # repaint the left half
    result = api.img2img(
        images=[init],
        mask_image=mask,
        prompt="a blue square",
        seed=1,
        width=16,
        height=16,
        steps=2,
        denoising_strength=1.0,
    )
    out = np.asarray(result.image).astype(int)
    assert np.abs(out[:, 12:] - np.asarray(init)[:, 12:]).max() <= 2  # the kept half is kept
    assert "denoising_strength" not in result.info["ignored"]  # img2img reads it
    assert "mask_blur" not in result.info["ignored"]  # with a mask, so does its blur (4 here)
    assert "Mask blur: 4" in result.info["infotexts"][0]


def test_what_has_no_counterpart_is_a_400_naming_it(api, running):
    with pytest.raises(RuntimeError, match="enable_hr=true has no counterpart"):
        api.txt2img(prompt="a red circle", enable_hr=True, width=16, height=16)
    status, _, body = running.post("/sdapi/v1/txt2img", {"prompt": "x", "sampler_name": "UniPC"})
    assert status == 400 and "unknown sampler 'UniPC'" in body["error"]
    status, _, body = running.post("/sdapi/v1/txt2img", {"prompt": "x", "scheduler": "Karras"})
    assert status == 400 and "scheduler" in body["error"]
    status, _, body = running.post("/sdapi/v1/options", {"sd_model_checkpoint": "sdxl"})
    assert status == 400 and "unknown model 'sdxl'" in body["error"]
    status, _, body = running.post("/sdapi/v1/txt2img", {"prompt": "x", "hires": 1})
    assert status == 400 and "unknown A1111 field 'hires'" in body["error"]


def test_progress_and_interrupt(api, running):
    progress = api.get_progress()
    assert progress["state"]["job_count"] == 0 and progress["progress"] == 0.0
    running.gate.clear()  # hold the worker so the job is running when interrupted
    import threading

    results = {}

    def draw():
        results["status"] = running.post(
            "/sdapi/v1/txt2img", {"prompt": "a red circle", "steps": 2, "width": 16, "height": 16}
        )

    thread = threading.Thread(target=draw)
    thread.start()
    import time

    for _ in range(100):
        if running.server.queue.running():
            break
        time.sleep(0.05)
    api.interrupt()
    running.gate.set()
    thread.join(30)
    status, _, body = results["status"]
    assert status == 200 and json.loads(body["info"])["interrupted"] is True  # as A1111 answers
    assert len(body["images"]) <= 1  # the image as it stood when stopped, as A1111 answers
    for png in body["images"]:
        assert Image.open(io.BytesIO(base64.b64decode(png))).size == (16, 16)
