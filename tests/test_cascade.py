"""Cascades: an upscaler trained on the data's own small images, exported with its base model,
run end to end by the pipeline (t2i/cascade.py)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from t2i.cascade import CascadePipeline, low_res_condition
from t2i.cli import main
from t2i.families import load
from t2i.images import enlarge, shrink
from t2i.models.unet import UNet, UNetConfig
from t2i.params import read_png_params
from t2i.training.diffusion_init import widen_conv_in

TRAIN = ["train", "diffusion", "--data", "shapes", "--preset", "tiny", "--no-progress"]
UPSCALER = ["--low_res", "8", "--model.cond_channels", "3", "--low_res_noise", "0.1"]


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    """A tiny base (8 px) and upscaler (16 px, from 8) trained 8 steps each, exported as one."""
    tmp = tmp_path_factory.mktemp("cascade")
    base_run, up_run = tmp / "base_run", tmp / "up_run"
    assert main([*TRAIN, "--image_size", "8", "--out", str(base_run)]) == 0
    assert main([*TRAIN, *UPSCALER, "--out", str(up_run)]) == 0
    base = tmp / "base"
    assert main(["export", str(base_run), "--out", str(base), "--guidance", "1.5"]) == 0
    out = tmp / "cascade"
    assert main(["export", str(up_run), "--out", str(out), "--base", str(base)]) == 0
    return out


def test_small_image_is_the_box_average_and_noise_scale_zero_changes_nothing():
    images = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    low = shrink(images, (8, 8))
    assert torch.allclose(low[0, 1, 2, 3], images[0, 1, 4:6, 6:8].mean())
    cond = low_res_condition(low, (16, 16))
    assert cond.shape == images.shape
    assert torch.allclose(cond, enlarge(low, (16, 16)))
    noise = torch.randn(2, 3, 8, 8)
    same = low_res_condition(low, (16, 16), noise, torch.zeros(2))
    noisy = low_res_condition(low, (16, 16), noise, torch.tensor([0.0, 1.0]))
    assert torch.equal(same, cond)
    assert torch.equal(noisy[0], cond[0]) and not torch.allclose(noisy[1], cond[1])


@pytest.mark.parametrize("patch", [1, 2])
def test_widened_stem_computes_what_the_trained_unet_did(patch):
    """--init of an upscaler from a plain model: the x_cond channels start at zero weight."""
    torch.manual_seed(0)
    plain = UNet(UNetConfig.preset("tiny", patch_size=patch)).eval()
    config = UNetConfig.preset("tiny", patch_size=patch, cond_channels=3)
    wide = UNet(config).eval()
    state = widen_conv_in(plain.state_dict(), wide.state_dict(), config)
    wide.load_state_dict(state)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 500.0])
    ctx = torch.randn(2, 5, 32)
    with torch.no_grad():
        want = plain(x, t, ctx)
        got = wide(x, t, ctx, x_cond=torch.randn(2, 3, 8, 8))
    assert torch.allclose(got, want, atol=1e-6)


def test_cascade_generates_from_its_base_and_batch_equals_single(cascade, tmp_path):
    pipe = load(cascade)
    assert isinstance(pipe, CascadePipeline) and pipe.scale == 2
    assert pipe.base is not None and not isinstance(pipe.base, CascadePipeline)
    p = pipe.params("a red circle", steps=2, seed=3)
    batch = pipe.generate(p, 2)
    assert batch.shape == (2, 3, 16, 16)
    alone = pipe.generate(pipe.params("a red circle", steps=2, seed=4), 1)
    # batched matmuls round differently; two samplers in a row carry it further than one
    torch.testing.assert_close(batch[1:], alone, atol=1e-3, rtol=0)
    # the second stage really is conditioned on the first: the base's images give the same
    # result, other small images another
    low = pipe.base.generate(pipe.base_params(p), 2)
    torch.testing.assert_close(pipe.generate_low(p, low), batch, atol=2e-4, rtol=0)
    assert not torch.allclose(pipe.generate_low(p, -low), batch)


def test_the_settings_given_apply_to_the_last_stage_the_base_keeps_its_own(cascade):
    pipe = load(cascade)
    p = pipe.params("a red circle", negative="blue", steps=7, guidance=5.0, seed=9, size=(32, 16))
    small = pipe.base_params(p)
    assert (small.width, small.height, small.seed) == (16, 8, 9)
    assert (small.prompt, small.negative) == ("a red circle", "blue")
    base = pipe.base.defaults
    assert base["guidance_scale"] == 1.5  # as exported (--guidance)
    assert (small.steps, small.guidance) == (base["steps"], 1.5) != (7, 5.0)
    assert pipe.base_steps(p) == base["steps"] and pipe.total_steps(p) == 7 + base["steps"]


def test_cli_generates_a_cascade_png_that_reproduces_itself(cascade, tmp_path):
    out = tmp_path / "x.png"
    argv = ["generate", "a red circle", "--model", str(cascade), "--steps", "2", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    params = read_png_params(out)
    assert (params.width, params.height) == (16, 16)
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "--out", str(again), "--quiet"]) == 0
    assert out.read_bytes() == again.read_bytes()


def test_upscaler_bad_settings_are_refused_with_what_is_allowed(tmp_path, capsys):
    cases = {
        ("--low_res", "16", "--model.cond_channels", "3"): "must be in [1, image_size 16)",
        ("--low_res", "8"): "model.cond_channels must be the data's image channels (3), got 0",
        ("--model.cond_channels", "3"): "give --low_res N",
        ("--low_res", "8", "--model.cond_channels", "3", "--low_res_noise", "-1"): ">= 0",
    }
    for args, message in cases.items():
        assert main([*TRAIN, *args, "--out", str(tmp_path / "r")]) == 2
        assert message in capsys.readouterr().err


def test_export_base_needs_an_upscaler_and_a_base_that_fits(cascade, tmp_path, capsys):
    plain_run, up_run = tmp_path / "plain", cascade.parent / "up_run"
    assert main([*TRAIN, "--loop.steps", "1", "--out", str(plain_run)]) == 0
    base = cascade / "base"
    assert main(["export", str(plain_run), "--out", str(tmp_path / "m"), "--base", str(base)]) == 2
    assert "not an upscaler run" in capsys.readouterr().err
    # a 16 px model as the base of an upscaler from 8 px
    wrong = [
        "export",
        str(up_run),
        "--out",
        str(tmp_path / "w"),
        "--base",
        str(plain_run / "model"),
    ]
    assert main(wrong) == 2
    assert "its base draws 16 px" in capsys.readouterr().err


def test_an_upscaler_without_its_base_says_what_it_needs(cascade, tmp_path):
    index = json.loads((cascade / "model_index.json").read_text())
    del index["base"]
    alone = tmp_path / "alone"
    for part in ("unet", "text_encoder"):
        src = cascade / part
        if src.is_dir():
            (alone / part).mkdir(parents=True)
            for f in src.iterdir():
                (alone / part / f.name).write_bytes(f.read_bytes())
    (alone / "model_index.json").write_text(json.dumps(index))
    pipe = load(alone)
    with pytest.raises(ValueError, match="upscaler from 8 px without a base model"):
        pipe("a red circle", steps=2)
    low = torch.zeros(1, 3, 8, 8)
    assert pipe.generate_low(pipe.params("a red circle", steps=2), low).shape == (1, 3, 16, 16)


def test_eval_counts_the_network_calls_of_every_stage(cascade):
    from t2i.evaluation.evaluate import generate_batched

    pipe = load(cascade)
    params = pipe.params("", steps=3, sampler="ddim")
    images, calls = generate_batched(pipe, ["a red circle", "a blue square"], params, 2)
    assert images.shape == (2, 3, 16, 16)
    # ddim: one (guided, batched) call per step and stage
    assert calls == 3 + pipe.base_steps(params)


def test_img2img_and_inpainting_run_through_both_stages(cascade, tmp_path):
    from PIL import Image

    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(init)
    m = Image.new("L", (16, 16), 0)
    m.paste(255, (0, 0, 8, 8))
    m.save(mask)
    pipe = load(cascade)
    steps = []
    edited = pipe("a blue square", steps=4, init=init, strength=0.5, callback=steps.append)[0]
    # img2img starts from the init's small version: the base does not run, the bar counts 2 steps
    p = pipe.params("a blue square", steps=4, init=init, strength=0.5)
    assert len(steps) == pipe.total_steps(p) == 2 and steps[-1]["i"] == 1
    steps.clear()
    painted = pipe("a blue square", steps=2, init=init, mask=mask, callback=steps.append)[0]
    p = pipe.params("a blue square", steps=2, init=init, mask=mask)
    assert len(steps) == pipe.total_steps(p) == 2 + pipe.base.defaults["steps"]
    painted = np.asarray(painted, dtype=int)
    assert edited.size == (16, 16)
    # inpainting keeps the unmasked part of the init in the last stage's output
    assert np.abs(painted[8:, 8:] - [200, 30, 30]).max() <= 2


def test_a_latent_upscaler_from_a_grid_sized_base(tmp_path, capsys):
    """A 3 px base trained on the data shrunk from 16 px (data_size), under an upscaler in an
    autoencoder's latent space whose small image (3 px) does not divide its 16 px: the cascade
    draws 16 px images from the base's 3 px ones, and refuses sizes the two cannot share."""
    ae_run, base_run, up_run = tmp_path / "ae", tmp_path / "base_run", tmp_path / "up_run"
    ae = ["train", "autoencoder", "--data", "shapes", "--preset", "tiny", "--no-progress"]
    assert main([*ae, "--loop.steps", "2", "--loop.sample_every", "0", "--out", str(ae_run)]) == 0
    grid = ["--model.channels", "16", "--model.attention_levels", "0"]
    assert (
        main([*TRAIN, *grid, "--image_size", "3", "--data_size", "16", "--out", str(base_run)]) == 0
    )
    latent = ["--autoencoder", str(ae_run / "model"), "--model.in_channels", "4"]
    latent += ["--low_res", "3", "--model.cond_channels", "3", "--cache_dir", str(tmp_path / "c")]
    assert main([*TRAIN, *latent, "--out", str(up_run)]) == 0
    base, out = tmp_path / "base", tmp_path / "cascade"
    assert main(["export", str(base_run), "--out", str(base)]) == 0
    assert main(["export", str(up_run), "--out", str(out), "--base", str(base)]) == 0

    pipe = load(out)
    assert pipe.scale == Fraction(16, 3) and pipe.factor == 16 and pipe.image_channels == 3
    p = pipe.params("a red circle", steps=2, seed=1)
    assert pipe.generate(p, 1).shape == (1, 3, 16, 16)
    low = pipe.base.generate(pipe.base_params(p), 1)
    assert low.shape == (1, 3, 3, 3)
    torch.testing.assert_close(pipe.generate_low(p, low), pipe.generate(p, 1), atol=2e-4, rtol=0)
    assert main(["generate", "x", "--model", str(out), "--size", "24x24", "--quiet"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    # the base learnt the upscaler's own small images: the data shrunk by area, not re-rendered
    bad = [*TRAIN, "--image_size", "3", "--data_size", "3", "--out", str(tmp_path / "x")]
    assert main(bad) == 2
    assert "data_size 3 must be larger than image_size 3" in capsys.readouterr().err
