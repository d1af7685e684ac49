"""The adversarial family (t2i/gan_pipeline.py) behind the generation protocol: loading, what it
refuses, `t2i restyle`, `t2i eval`, and the recipe's run end to end (t2i/training/gan.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image
from tiny_models import write_tiny_gan_model

import t2i
from t2i.cli import main as t2i_main
from t2i.evaluation.evaluate import EvalConfig, evaluate, model_kind
from t2i.gan_pipeline import GanPipeline

PROMPT = "a red circle above a blue square"
ENV_THREADS = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_gan_model(tmp_path_factory.mktemp("gan") / "model", word_attention=True)


def test_a_gan_folder_loads_and_generates_through_the_protocol(folder):
    pipe = t2i.load(folder)
    assert isinstance(pipe, GanPipeline) and pipe.family == "gan"
    assert pipe.supports.samplers == ("gan",) and pipe.supports.steps is False
    assert pipe.defaults == {"name": "gan", "steps": 1, "guidance_scale": 1.0}
    images = pipe(PROMPT, n=2, seed=5)
    assert [im.size for im in images] == [(16, 16)] * 2
    assert [json.loads(im.info["t2i"])["seed"] for im in images] == [5, 6]
    p = pipe.params(PROMPT, seed=5)
    batch = pipe.generate(p, 2)
    alone = pipe.generate(pipe.params(PROMPT, seed=6), 1)
    assert torch.allclose(batch[1], alone[0], atol=1e-5)  # image i is the image made alone
    assert torch.equal(batch, pipe.generate(p, 2))
    assert not torch.equal(batch[0], batch[1])
    other = pipe.generate(pipe.params("a green star", seed=5), 1)
    assert not torch.equal(other[0], batch[0])  # the caption changes the image
    assert model_kind(folder) == "gan"


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"guidance": 3.0}, "no classifier-free guidance"),
        ({"negative": "blue"}, "no classifier-free guidance"),
        ({"steps": 8}, "a GAN draws in 1 step"),
        ({"sampler": "ddim"}, "the only sampler is 'gan'"),
        ({"size": (32, 32)}, "draws 16x16 only"),
        ({"guidance_interval": (0.5, 2.0)}, "noise levels"),
    ],
)
def test_what_a_gan_cannot_do_is_refused_with_the_reason(folder, kw, message):
    with pytest.raises(ValueError, match=message):
        t2i.load(folder).params(PROMPT, **kw)


def test_img2img_needs_a_diffusion_model(folder, tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "init.png")
    with pytest.raises(ValueError, match="need a diffusion model"):
        t2i.load(folder).params(PROMPT, init=str(tmp_path / "init.png"))


def test_wrong_components_are_refused_naming_the_family_and_class(folder, tmp_path):
    wrong = tmp_path / "wrong"
    shutil.copytree(folder, wrong)
    index = json.loads((wrong / "model_index.json").read_text())
    (wrong / "model_index.json").write_text(json.dumps({**index, "family": "draw"}))
    with pytest.raises(ValueError, match="the draw family needs DrawNet, found missing"):
        t2i.load(wrong)
    (wrong / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(wrong / "gan")
    index["components"].pop("gan")
    (wrong / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="the gan family needs GanNet, found missing"):
        t2i.load(wrong)


def test_restyle_keeps_the_style_and_changes_the_caption(folder, tmp_path):
    pipe = t2i.load(folder)
    image = pipe.generate(pipe.params(PROMPT, seed=3), 1)
    out = pipe.restyle(image.expand(2, -1, -1, -1), ["a green star", PROMPT])
    assert out.shape == (2, 3, 16, 16) and not torch.equal(out[0], out[1])
    with pytest.raises(ValueError, match="this GAN reads"):
        pipe.restyle(torch.zeros(1, 1, 16, 16), [PROMPT])
    with pytest.raises(ValueError, match="2 prompts for 1 style images"):
        pipe.restyle(image, [PROMPT, PROMPT])


def test_t2i_restyle_writes_the_image_and_each_redraw(folder, tmp_path):
    src = tmp_path / "style.png"
    t2i.load(folder)(PROMPT, seed=1)[0].save(src)
    out = tmp_path / "strip.png"
    assert t2i_main(["restyle", str(src), "a green star", PROMPT, "--model", str(folder),
                     "--out", str(out)]) == 0  # fmt: skip
    strip = Image.open(out).convert("RGB")
    assert strip.size == (3 * 16, 16)  # the image and two redraws side by side
    assert strip.crop((0, 0, 16, 16)).tobytes() == Image.open(src).convert("RGB").tobytes()


@pytest.mark.parametrize(
    "what,args,message",
    [
        ("diffusion", ["--model", "shapes"], "has no style encoder"),
        ("size", [], "style image is 20x20"),
    ],
)
def test_t2i_restyle_refuses_what_it_cannot_do(folder, tmp_path, capsys, what, args, message):
    src = tmp_path / "style.png"
    Image.new("RGB", (20, 20)).save(src)
    argv = ["restyle", str(src), PROMPT, "--out", str(tmp_path / "o.png")]
    argv += args or ["--model", str(folder)]
    assert t2i_main(argv) == 2
    assert message in capsys.readouterr().err


def test_t2i_eval_scores_a_gan_like_any_model(tmp_path):
    levels = {"channels": [16, 16, 16, 8, 8], "d_channels": [8, 8, 16, 16, 16]}
    folder = write_tiny_gan_model(tmp_path / "gan64", image_size=64, **levels)
    cfg = EvalConfig(data="shapes", n=8, batch_size=4, progress=False)
    report = evaluate(folder, cfg, tmp_path / "eval")
    assert report["kind"] == "gan" and report["steps"] == 1 and report["nfe"] == 1
    assert "compositional_accuracy_fixed" in report["metrics"]


def test_the_recipe_trains_logs_its_terms_and_exports_a_loadable_folder(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "t2i", "train", "gan", "--preset", "tiny", "--data", "shapes",
           "--out", str(run), "--no-progress", "--loop.bf16", "false"]  # fmt: skip
    env = {**__import__("os").environ, **ENV_THREADS}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    for key in ("d0_loss", "g0_loss", "d1_loss", "g1_loss", "g_int", "style", "penalty0"):
        assert all(key in r for r in steps), key
    assert any(r["penalty0"] > 0 for r in steps)  # the lazy penalty's steps
    probes = [r for r in records if r.get("event") == "probe"]
    assert [r["step"] for r in probes] == [4, 8] and all(r["diversity"] > 0 for r in probes)
    pipe = t2i.load(run / "model")
    assert pipe.family == "gan" and pipe(PROMPT)[0].size == (16, 16)
    config = json.loads((run / "config.json").read_text())
    assert config["mismatch_weight"] == 0.5 and config["gan_int"] == 1.0
    assert (run / "samples" / "step-000008.png").is_file()


def test_a_text_encoder_of_the_wrong_width_is_refused_before_training(tmp_path):
    cmd = [sys.executable, "-m", "t2i", "train", "gan", "--preset", "tiny", "--data", "shapes",
           "--out", str(tmp_path / "r"), "--model.context_dim", "64"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "model.context_dim 64 != the width of text_encoder 'minilm': 384" in proc.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_the_perceptual_loss_reads_a_trained_encoder_and_refuses_others(tmp_path):
    base = [sys.executable, "-m", "t2i", "train", "gan", "--preset", "tiny", "--data", "shapes",
            "--no-progress", "--loop.steps", "2", "--loop.sample_every", "0"]  # fmt: skip
    env = {**__import__("os").environ, **ENV_THREADS}
    run = tmp_path / "run"
    proc = subprocess.run([*base, "--out", str(run), "--perceptual", "emoji"], capture_output=True,
                          text=True, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["perceptual"] > 0 for r in records if "loss" in r)
    proc = subprocess.run([*base, "--out", str(tmp_path / "bad"), "--perceptual", "fashion"],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert proc.returncode == 2 and "perceptual" in proc.stderr
