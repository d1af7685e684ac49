"""The unCLIP family (t2i/unclip_pipeline.py) behind the generation protocol: loading, the seeds
contract, the prior's best-of-n, variations and interpolation, and the folders it refuses."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import write_tiny_unclip_model

import t2i
from t2i.cli import main as t2i_main
from t2i.models.unclip import (
    DiffusionPrior,
    EmbeddingTokens,
    EmbeddingTokensConfig,
    PriorConfig,
    decoder_condition,
    embedding_input,
)
from t2i.unclip_pipeline import UnclipPipeline, best_of, prior_noise, slerp

PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_unclip_model(tmp_path_factory.mktemp("unclip") / "model")


@pytest.fixture(scope="module")
def pipe(folder):
    return t2i.load(folder)


def test_an_unclip_folder_loads_and_generates_through_the_protocol(pipe):
    assert isinstance(pipe, UnclipPipeline) and pipe.family == "unclip"
    assert pipe.supports.img2img and not pipe.supports.adapters
    images = pipe(PROMPT, n=2, seed=5)
    assert [im.size for im in images] == [(16, 16)] * 2
    assert [json.loads(im.info["t2i"])["seed"] for im in images] == [5, 6]
    p = pipe.params(PROMPT, seed=5)
    batch = pipe.generate(p, 2)
    alone = pipe.generate(pipe.params(PROMPT, seed=6), 1)
    assert torch.allclose(batch[1], alone[0], atol=1e-3)  # image i is the image made alone
    assert torch.equal(batch, pipe.generate(p, 2))
    other = pipe.generate(pipe.params("a green star", seed=5), 1)
    assert not torch.allclose(other[0], batch[0], atol=1e-3)  # the prompt reaches the image


def test_items_of_different_prompts_each_get_their_own_embedding(pipe):
    items = [pipe.params(PROMPT, seed=1), pipe.params("a green star", seed=2)]
    together = pipe.generate_items(items)
    for i, item in enumerate(items):
        alone = pipe.generate(item, 1)
        assert torch.allclose(together[i], alone[0], atol=1e-3)


def test_the_embedding_changes_the_image_and_the_null_embedding_is_zeros(pipe):
    p = pipe.params("", seed=3)
    e = embedding_input(torch.randn(2, 16))
    drawn = pipe.generate(p, 2, seeds=[3, 3], embeds=e)
    assert not torch.allclose(drawn[0], drawn[1], atol=1e-3)
    uncond = pipe.unconditional(p)
    assert torch.equal(uncond["pooled"], torch.zeros(1, 16))
    with pytest.raises(ValueError, match=r"embeds \(1, 16\): expected \(2, 16\)"):
        pipe.generate(p, 2, embeds=e[:1])


def test_best_of_n_keeps_the_candidate_with_the_highest_dot_product():
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    samples = torch.tensor(
        [
            [[0.0, 1.0, 0.0], [0.9, 0.1, 0.0], [-1.0, 0.0, 0.0]],
            [[0.0, 0.2, 1.0], [1.0, 0.0, 0.0], [0.1, 0.9, 0.1]],
        ]
    )
    picked = best_of(samples, text)
    assert torch.allclose(picked, embedding_input(samples[[0, 1], [1, 2]]))


def test_more_candidates_keep_the_first_ones_and_never_score_lower(pipe):
    """Candidate j of an image is the same for any k, so best-of-2 scores at least best-of-1."""
    assert torch.equal(prior_noise(7, 2, 16)[:1], prior_noise(7, 1, 16))
    prompts = [PROMPT, "a green star", "a blue square"]
    cond = pipe.encode_text(prompts)
    text = pipe.clip_text(prompts, cond)
    scores = {}
    for k in (1, 2):
        pipe.candidates = k
        e = pipe.prior_embeddings(prompts, cond, [1, 2, 3])
        scores[k] = torch.nn.functional.cosine_similarity(e, text, dim=-1)
    pipe.candidates = 2
    assert (scores[2] >= scores[1] - 1e-6).all()


def test_variations_read_the_image_and_no_text(pipe):
    image = pipe.generate(pipe.params(PROMPT, seed=1), 1)
    out = pipe.variations(image, n=3, seed=4)
    assert out.shape == (3, 3, 16, 16)
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # each its own seed
    again = pipe.variations(image, n=1, seed=4)
    assert torch.allclose(again[0], out[0], atol=1e-4)
    with pytest.raises(ValueError, match="CLIP reads"):
        pipe.variations(torch.zeros(1, 1, 16, 16))


def test_interpolation_ends_at_each_image_and_walks_on_the_sphere(pipe):
    a, b = pipe.generate(pipe.params(PROMPT, seed=1), 2)
    strip = pipe.interpolate_images(a[None], b[None], frames=3, seed=9)
    assert strip.shape == (3, 3, 16, 16)
    ends = pipe.variations(a[None], n=1, seed=9)
    assert torch.allclose(strip[0], ends[0], atol=1e-4)
    ea, eb = embedding_input(torch.randn(2, 16))
    mid = slerp(ea, eb, 0.5)
    assert torch.allclose(mid.norm(), ea.norm(), rtol=1e-4)
    assert torch.allclose(slerp(ea, eb, 0.0), ea, atol=1e-5)


def test_a_regression_prior_draws_too(tmp_path):
    pipe = t2i.load(write_tiny_unclip_model(tmp_path / "reg", regression=True))
    assert pipe.prior_denoiser is None
    assert pipe.generate(pipe.params(PROMPT, seed=1), 2).shape == (2, 3, 16, 16)


def test_wrong_components_are_refused_with_what_they_are(folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    index = json.loads((bad / "model_index.json").read_text())
    del index["components"]["prior"]
    (bad / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="components.prior: the unclip family needs"):
        t2i.load(bad)
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    from t2i.checkpoint import save_component

    save_component(
        DiffusionPrior(PriorConfig(embed_dim=8, text_dim=32, dim=16, heads=2)), other / "prior"
    )
    with pytest.raises(ValueError, match=r"embedding has 16 dims but \{'prior': 8\}"):
        t2i.load(other)


def test_decoder_condition_appends_the_tokens_after_the_text():
    tokens = EmbeddingTokens(EmbeddingTokensConfig(4, 6, 3))
    assert tokens(torch.randn(2, 4)).abs().max() == 0  # zero at initialisation
    text = {"context": torch.randn(2, 5, 6), "context_mask": torch.ones(2, 5, dtype=torch.bool)}
    cond = decoder_condition(tokens, text, torch.randn(1, 4))
    assert cond["context"].shape == (2, 8, 6) and cond["context_mask"].all()
    assert torch.equal(cond["context"][:, :5], text["context"])
    assert cond["pooled"].shape == (2, 4)


def test_t2i_generate_and_variations_on_the_command_line(folder, tmp_path, capsys):
    out = tmp_path / "img.png"
    assert t2i_main(["generate", PROMPT, "--model", str(folder), "--out", str(out)]) == 0
    varied = tmp_path / "var.png"
    args = ["variations", str(out), "--model", str(folder), "--out", str(varied)]
    assert t2i_main([*args, "--n", "2", "--seed", "3"]) == 0
    assert sorted(p.name for p in tmp_path.glob("var-*.png")) == ["var-3.png", "var-4.png"]
    assert json.loads(Image.open(tmp_path / "var-4.png").info["t2i"])["seed"] == 4
    walk = tmp_path / "walk.png"
    args = ["variations", str(out), "--towards", str(out), "--frames", "3"]
    assert t2i_main([*args, "--model", str(folder), "--out", str(walk)]) == 0
    assert Image.open(walk).size == (3 * 16, 16)
    assert t2i_main(["variations", str(out), "--model", "shapes", "--out", str(varied)]) == 2
    assert "draws no variations" in capsys.readouterr().err
    same = tmp_path / "same.png"
    args = ["generate", "--image-prompt", str(out), "--model", str(folder), "--seed", "3"]
    assert t2i_main([*args, "--out", str(same)]) == 0  # no prompt needed with an image
    assert (np.asarray(Image.open(same)) == np.asarray(Image.open(tmp_path / "var-3.png"))).all()
    assert t2i_main(["generate", "a cat", "--image-prompt", str(out), "--out", str(same)]) == 2
    assert "draws from a prompt only" in capsys.readouterr().err


def test_variations_over_http_and_other_families_refuse_an_image_prompt(folder, tmp_path):
    from test_server import Running, decode
    from tiny_models import write_tiny_model

    pipes = {"unclip": t2i.load(folder), "plain": t2i.load(write_tiny_model(tmp_path / "plain"))}
    source = tmp_path / "source.png"
    t2i.load(folder)(PROMPT, seed=1)[0].save(source)
    image = base64.b64encode(source.read_bytes()).decode()
    running = Running(pipes, max_queue=8, max_batch=4)
    try:
        body = {"prompt": "", "model": "unclip", "image_prompt": image, "n": 2, "seed": 4}
        status, _, reply = running.post("/api/generate", body)
        assert status == 200, reply
        params = [decode(im)[0] for im in reply["images"]]
        assert [p.seed for p in params] == [4, 5] and all(p.image_prompt for p in params)
        models = json.loads(running.request("GET", "/api/models")[2])["models"]
        assert {m["name"]: m["supports"]["image_prompt"] for m in models} == {
            "unclip": True,
            "plain": False,
        }
        status, _, reply = running.post("/api/generate", {**body, "model": "plain"})
        assert status == 400 and "draws from a prompt only" in reply["error"]
        status, _, reply = running.post("/api/generate", {**body, "image_prompt": "bm90IGFu"})
        assert status == 400 and "image_prompt must be a base64-encoded PNG" in reply["error"]
        assert not list(running.server.upload_dir.glob("*"))  # each upload removed after use
    finally:
        running.close()
