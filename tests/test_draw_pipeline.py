"""The AlignDRAW family (t2i/draw_pipeline.py) behind the generation protocol, its recipe
(t2i/training/draw.py) and `t2i generate --strip`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from tiny_models import write_tiny_draw_model

import t2i
from t2i.data import load_dataset
from t2i.draw_pipeline import DrawPipeline, elbo
from t2i.models.draw import DrawConfig, DrawNet
from t2i.models.text_encoder import TextLSTM, TextLSTMConfig, build_vocab

PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_draw_model(tmp_path_factory.mktemp("draw") / "model")


def test_a_draw_folder_loads_and_generates_through_the_protocol(folder):
    pipe = t2i.load(folder)
    assert isinstance(pipe, DrawPipeline) and pipe.family == "draw"
    assert pipe.supports.samplers == ("draw",) and pipe.supports.steps is False
    assert pipe.defaults == {"name": "draw", "steps": 4, "guidance_scale": 1.0}
    images = pipe(PROMPT, n=2, seed=5)
    assert [im.size for im in images] == [(16, 16)] * 2
    assert [json.loads(im.info["t2i"])["seed"] for im in images] == [5, 6]
    p = pipe.params(PROMPT, seed=5)
    batch = pipe.generate(p, 2)
    alone = pipe.generate(pipe.params(PROMPT, seed=6), 1)
    assert torch.allclose(batch[1], alone[0], atol=1e-6)  # image i is the image made alone
    assert torch.equal(batch, pipe.generate(p, 2))  # the same call repeats bit for bit
    assert not torch.equal(batch[0], batch[1])
    other = pipe.generate(pipe.params("a green star", seed=5), 1)
    assert not torch.equal(other[0], batch[0])  # the caption changes the drawing


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"guidance": 3.0}, "no classifier-free guidance"),
        ({"negative": "blue"}, "no classifier-free guidance"),
        ({"steps": 8}, "trained to draw in 4 steps"),
        ({"sampler": "ddim"}, "the only sampler is 'draw'"),
        ({"size": (32, 32)}, "draws 16x16 only"),
        ({"guidance_interval": (0.5, 2.0)}, "noise levels"),
    ],
)
def test_what_draw_cannot_do_is_refused_with_the_reason(folder, kw, message):
    with pytest.raises(ValueError, match=message):
        t2i.load(folder).params(PROMPT, **kw)


def test_the_callback_sees_each_canvas_and_preview_is_the_image_so_far(folder):
    pipe = t2i.load(folder)
    seen = []
    images = pipe.generate(pipe.params(PROMPT), 2, callback=seen.append)
    assert [info["i"] for info in seen] == [0, 1, 2, 3]
    assert pipe.total_steps(pipe.params(PROMPT)) == 4
    assert torch.allclose(pipe.preview(seen[-1], 1), images[1], atol=1e-6)
    assert torch.allclose(seen[0]["alpha"].sum(-1), torch.ones(2))


def test_the_likelihood_is_the_elbo_split_into_its_parts(folder):
    pipe = t2i.load(folder)
    images = torch.rand(3, 3, 16, 16).mul(255).round().div(127.5).sub(1)
    prompts = [PROMPT, "a green star", ""]
    first = pipe.likelihood(images, prompts, generator=torch.Generator().manual_seed(1))
    again = pipe.likelihood(images, prompts, generator=torch.Generator().manual_seed(1))
    assert set(first) == {"elbo", "reconstruction", "kl"}
    assert torch.equal(first["elbo"], again["elbo"])
    assert torch.allclose(first["elbo"], first["reconstruction"] + first["kl"])
    assert (first["kl"] > 0).all() and torch.isfinite(first["elbo"]).all()
    # a bound on 8 bits per value of uniformly random pixels sits near 8 bits or above
    assert (first["elbo"] > 6).all()


def test_training_on_the_elbo_lowers_it():
    data = load_dataset("shapes", image_size=16, length=32)
    items = [data[i] for i in range(16)]
    x = torch.stack([it["image"] for it in items])
    captions = [it["caption"] for it in items]
    torch.manual_seed(0)
    text = TextLSTM(TextLSTMConfig(vocab=build_vocab(captions), word_dim=16, hidden=16))
    net = DrawNet(DrawConfig.preset("tiny", image_channels=3))
    params = [*net.parameters(), *text.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    noise_gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        emb = text.encode(captions)
        noise = torch.randn(16, 4, 4, generator=noise_gen)
        recon, kl = elbo(net, x, emb.context, emb.mask, noise)
        loss = (recon + kl).mean() / x[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses[::10]


def test_generate_writes_the_canvas_after_each_step(folder, tmp_path):
    cli = [sys.executable, "-m", "t2i", "generate", PROMPT, "--model", str(folder), "--quiet"]
    for name, check in (("s.png", lambda im: im.size == (4 * 18 + 2, 20)), ("s.gif", None)):
        out = tmp_path / name
        proc = subprocess.run([*cli, "--strip", str(out), "--out", str(tmp_path / "a.png")],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        image = Image.open(out)
        if check is not None:
            assert check(image), image.size
        else:
            assert image.n_frames >= 4  # the last frame's repeats merge into one longer frame
    proc = subprocess.run([*cli, "--strip", "s.jpg"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "--strip must name a .png or .gif" in proc.stderr
    assert not (tmp_path / "t2i.png").exists()


def train_tiny(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    cli = [sys.executable, "-m", "t2i", "train", "draw", "--data", "shapes", "--preset", "tiny"]
    cli += ["--no-progress", "--loop.steps", "2", "--out", str(tmp_path / "run"), *extra]
    return subprocess.run(cli, capture_output=True, text=True)


def test_the_caption_encoder_may_be_the_word_level_transformer(tmp_path):
    extra = ["--text_encoder", "transformer", "--loop.sample_every", "0"]
    proc = train_tiny(tmp_path, *extra, "--text_model.dim", "32")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pipe = t2i.load(tmp_path / "run" / "model")
    assert type(pipe.text_encoder).__name__ == "TextTransformer"
    assert pipe(PROMPT)[0].size == (16, 16)


def test_a_bad_caption_encoder_or_width_is_refused_before_training(tmp_path):
    proc = train_tiny(tmp_path, "--text_encoder", "bert")
    assert proc.returncode == 2 and "choose from ['lstm', 'transformer']" in proc.stderr
    proc = train_tiny(tmp_path, "--model.context_dim", "48")
    assert proc.returncode == 2 and "model.context_dim 48 != text width 32" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_temperature_zero_draws_the_priors_means_for_every_seed(tmp_path):
    folder = write_tiny_draw_model(tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "sampler": {"temperature": 0}}))
    pipe = t2i.load(folder)
    images = pipe.generate(pipe.params(PROMPT), 3)
    assert torch.allclose(images[0], images[1], atol=1e-6)
    assert torch.allclose(images[0], images[2], atol=1e-6)
    bad = {**index, "sampler": {"temperature": 5}}
    (folder / "model_index.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"model_index.json: sampler.temperature 5.0 must be"):
        t2i.load(folder)
