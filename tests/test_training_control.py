"""`t2i train controlnet` / `t2i train t2i_adapter` (t2i/training/diffusion_control.py): the loss
falls with the base frozen, runs resume bit for bit, the exported control loads onto its base."""

from __future__ import annotations

import argparse

import pytest
import torch
from resume_check import losses_on_one_batch
from test_training_cli import straight_and_killed
from tiny_models import write_tiny_model

import t2i
from t2i.training import diffusion_control as dc


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("base") / "tiny", steps=2)


def built(base, arch: str, kind: str = "layout", data: str = "shapes"):
    args = argparse.Namespace(
        init=str(base), data=data, autoencoder=None, no_progress=True, recipe=arch, out=None
    )
    cfg = dc.adopt(dc.preset("tiny"), args)
    cfg.control.kind = kind
    return dc.build(cfg, args)


@pytest.mark.parametrize("arch", ["controlnet", "t2i_adapter"])
def test_the_control_loss_falls_and_only_the_control_learns(base, arch):
    recipe = built(base, arch)
    before = {k: v.clone() for k, v in recipe.model.base.state_dict().items()}
    batch = recipe.collate([recipe.dataset[i] for i in range(8)])
    assert batch["hint"].shape == (8, 1, 16, 16)
    assert all(p.requires_grad is False for p in recipe.model.base.parameters())
    assert any(p.requires_grad for p in recipe.model.control.parameters())
    losses = losses_on_one_batch(recipe, batch)
    assert losses[-1] < 0.9 * losses[0], losses[::8]
    after = recipe.model.base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_layout_is_refused_for_data_without_scenes(base, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("a red circle")
    with pytest.raises(ValueError, match="only the shapes data"):
        built(base, "controlnet", data=str(folder))


def test_the_recipe_needs_a_base_and_a_known_kind(base):
    args = argparse.Namespace(init=None, data="shapes", recipe="controlnet")
    with pytest.raises(ValueError, match="needs --init"):
        dc.build(dc.preset("tiny"), args)
    with pytest.raises(ValueError, match="choose from"):
        built(base, "controlnet", kind="depth")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["controlnet", "t2i_adapter"])
def test_control_training_resumes_bit_for_bit_and_exports_a_loadable_control(base, tmp_path, arch):
    args = [arch, "--init", str(base), "--data", "shapes", "--preset", "tiny"]
    args += ["--control.kind", "edges", "--no-progress", "--loop.steps", "6"]
    args += ["--loop.ckpt_every", "3", "--loop.sample_every", "0"]
    a, b, killed = straight_and_killed(args, tmp_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    name = "edges" if arch == "controlnet" else "edges-adapter"
    pipe = t2i.load(base)
    assert pipe.load_control(killed / "model" / name) == name
    assert pipe.controls.get(name).meta["arch"] == arch
