"""Interpolation between seeds, prompts and inverted images; the `t2i interpolate` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import write_tiny_model

from t2i.cli import main
from t2i.families import load
from t2i.interpolate import interpolate, lerp_cond, slerp


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    vocab = "a red blue circle square big".split()
    return write_tiny_model(tmp_path_factory.mktemp("model"), vocab=vocab)


@pytest.fixture(scope="module")
def pipe(model_dir):
    return load(model_dir)


def test_slerp_ends_and_keeps_the_norm_of_gaussian_noise():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 16, 16, generator=g), torch.randn(3, 16, 16, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    mid = slerp(a, b, 0.5)
    assert mid.norm() / a.norm() == pytest.approx(1.0, abs=0.05)
    assert ((a + b) / 2).norm() / a.norm() < 0.8  # what a straight line would give instead


def test_lerp_cond_has_the_two_prompts_at_its_ends(pipe):
    ca, cb = pipe.encode_text(["a red circle"]), pipe.encode_text(["a big blue square"])
    out = lerp_cond(ca, cb, [0.0, 0.5, 1.0])
    la = ca["context"].shape[1]
    assert torch.equal(out["context"][0, :la], ca["context"][0])
    assert torch.equal(out["context"][2], cb["context"][0])
    assert out["context_mask"][0].sum() == la and out["context_mask"][2].all()


def test_seed_interpolation_ends_are_the_two_seeds_images(pipe):
    p = pipe.params("a red circle", seed=3)
    frames = interpolate(pipe, p, frames=4, seed_b=9)
    # the seeds' own images, drawn in a batch of the same size (batch size changes rounding)
    ends = pipe.generate(p, 4, seeds=[3, 3, 9, 9])
    torch.testing.assert_close(frames[:1], ends[:1], atol=1e-5, rtol=0)
    torch.testing.assert_close(frames[-1:], ends[-1:], atol=1e-5, rtol=0)
    steps = (frames[1:] - frames[:-1]).abs().mean((1, 2, 3))
    assert (steps > 1e-3).all()  # every frame moves


def test_prompt_interpolation_ends_are_the_two_prompts_images(pipe):
    p = pipe.params("a red circle", seed=1)
    frames = interpolate(pipe, p, frames=3, prompt_b="a big blue square")
    last = pipe.generate(pipe.params("a big blue square", seed=1))
    torch.testing.assert_close(frames[-1:], last, atol=2e-4, rtol=0)
    assert (frames[0] - frames[-1]).abs().max() > 1e-3


def test_cli_writes_a_strip_and_rejects_bad_input(model_dir, tmp_path, capsys):
    out = tmp_path / "strip.png"
    base = ["interpolate", "a red circle", "--model", str(model_dir), "--out", str(out)]
    assert main([*base, "--seeds", "1", "2", "--frames", "4"]) == 0
    assert Image.open(out).size == (4 * 16, 16)
    rng = np.random.default_rng(0)
    images = []
    for name in ("a.png", "b.png"):
        images.append(tmp_path / name)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images[-1])
    assert main([*base, "--images", *map(str, images), "--frames", "3", "--steps", "4"]) == 0
    assert Image.open(out).size == (3 * 16, 16)
    assert main([*base, "--frames", "1"]) == 2
    assert "frames must be an integer in [2, 64], got 1" in capsys.readouterr().err
    assert main([*base, "--seeds", "1"]) == 2
    assert "--seeds takes two seeds" in capsys.readouterr().err
    (tmp_path / "junk.png").write_bytes(b"junk")
    assert main([*base, "--images", str(tmp_path / "junk.png"), str(images[0])]) == 2
    assert "cannot read init image" in capsys.readouterr().err
