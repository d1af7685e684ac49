"""The Würstchen-style family (t2i/wuerstchen_pipeline.py, t2i/models/semantic.py,
t2i/training/diffusion_wuerstchen_b.py, diffusion_wuerstchen_c.py): the semantic encoder's grid,
stage B learning to read it, both recipes end to end into folders `t2i.load` draws from, the
seeds contract, `t2i export`, and the folders and flags refused before any work."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_models import write_small_emoji_set, write_tiny_model

import t2i
from t2i.checkpoint import load_model_folder, save_model_folder
from t2i.cli import main as t2i_main
from t2i.images import enlarge
from t2i.models.autoencoder import AutoencoderConfig, AutoencoderKL
from t2i.models.semantic import SemanticConfig, SemanticEncoder
from t2i.models.unet import UNet
from t2i.pipeline import Pipeline
from t2i.training import diffusion_wuerstchen_b as stage_b_recipe
from t2i.training.diffusion_model import make_denoiser
from t2i.wuerstchen_pipeline import STAGE_C_KEY, WuerstchenPipeline, check_semantic_stages

PROMPT = "a cat face emoji"


def test_the_semantic_encoder_maps_latents_to_a_bounded_grid_at_its_factor():
    torch.manual_seed(0)
    config = SemanticConfig(in_channels=4, out_channels=6, channels=(8, 16, 16), groups=4)
    assert config.factor == 4 and config.grid_side(24) == 6
    grid = SemanticEncoder(config)(3 * torch.randn(2, 4, 16, 24))
    assert grid.shape == (2, 6, 4, 6)
    assert grid.abs().max() < 1  # tanh: strictly inside (-1, 1)
    assert not torch.allclose(grid[0], grid[1], atol=1e-3)  # it reads the latent


def test_the_semantic_encoder_refuses_a_side_or_channels_it_cannot_read():
    encoder = SemanticEncoder(SemanticConfig(channels=(8, 8, 8), groups=4))
    with pytest.raises(ValueError, match="latent side of 18 is not a multiple of 4"):
        encoder(torch.randn(1, 4, 16, 18))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\) latents, got \(1, 3, 16, 16\)"):
        encoder(torch.randn(1, 3, 16, 16))


def test_a_semantic_config_needs_widths_divisible_by_its_groups():
    with pytest.raises(ValueError, match="12 channels are not divisible by groups=8"):
        SemanticConfig(channels=(8, 12), groups=8)
    with pytest.raises(ValueError, match="out_channels"):
        SemanticConfig(out_channels=0)


def test_stage_b_learns_to_read_each_latents_own_grid():
    """The tiny preset's UNet and encoder, trained together by the recipe's loss on 8 fixed
    smooth latents: the loss with each latent's own grid ends well below the loss with the
    grids given to the wrong latents, so the grid carries its latent's information."""
    torch.manual_seed(0)
    cfg = stage_b_recipe.preset("tiny")
    model = stage_b_recipe.StageB(UNet(cfg.model), SemanticEncoder(cfg.semantic))
    denoiser = make_denoiser(cfg, model.unet)
    n, c, side = 8, cfg.model.in_channels, 16
    grid = cfg.semantic.grid_side(side)
    x0 = enlarge(torch.randn(n, c, 4, 4), (side, side)) + 0.1 * torch.randn(n, c, side, side)
    text = {"context": torch.zeros(n, 1, cfg.model.context_dim)}
    text["context_mask"] = torch.ones(n, 1, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(80):
        sigma = denoiser.training_sigmas(n, gen)
        noise = torch.randn(x0.shape, generator=gen)
        grid_noise = torch.randn(n, cfg.semantic.out_channels, grid, grid, generator=gen)
        scale = torch.rand(n, generator=gen) * cfg.semantic_noise
        cond = stage_b_recipe.semantic_condition(model.semantic, x0, grid_noise, scale)
        loss = denoiser.loss(x0, sigma, noise, x_cond=cond, **text).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    own = shuffled = 0.0
    wrong = torch.roll(torch.arange(n), 1)  # every latent gets another's grid
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        zeros = torch.zeros(n, cfg.semantic.out_channels, grid, grid)
        cond = stage_b_recipe.semantic_condition(model.semantic, x0, zeros, torch.zeros(n))
        assert cond.shape == (n, cfg.semantic.out_channels, side, side)
        for _ in range(8):
            sigma = denoiser.training_sigmas(n, gen)
            noise = torch.randn(x0.shape, generator=gen)
            own += denoiser.loss(x0, sigma, noise, x_cond=cond, **text).mean().item()
            shuffled += denoiser.loss(x0, sigma, noise, x_cond=cond[wrong], **text).mean().item()
    assert own < 0.85 * shuffled


# ---------------------------------------------------------------- the recipes end to end


@pytest.fixture(scope="module")
def emoji32(tmp_path_factory) -> Path:
    return write_small_emoji_set(tmp_path_factory.mktemp("emoji32"), 32, 25, 0.15)


@pytest.fixture(scope="module")
def runs(emoji32, tmp_path_factory) -> SimpleNamespace:
    """A tiny autoencoder folder, then `t2i train wuerstchen_b` on it and `t2i train
    wuerstchen_c` on that (tiny presets, 4 steps, sample grids at step 4)."""
    root = tmp_path_factory.mktemp("wuerstchen")
    torch.manual_seed(0)
    ae = AutoencoderKL(AutoencoderConfig.preset("tiny"))
    save_model_folder(root / "ae", {"autoencoder": ae}, {})
    common = ["--data", str(emoji32), "--no-progress", "--preset", "tiny"]
    common += ["--cache_dir", str(root / "cache"), "--loop.sample_every", "4"]
    b, c = root / "b", root / "c"
    codes = [
        t2i_main(
            ["train", "wuerstchen_b", "--out", str(b), "--autoencoder", str(root / "ae"), *common]
        ),
        t2i_main(
            ["train", "wuerstchen_c", "--out", str(c), "--stage-b", str(b / "model"), *common]
        ),
    ]
    return SimpleNamespace(root=root, b=b, c=c, codes=codes)


@pytest.fixture(scope="module")
def stage_b(runs) -> WuerstchenPipeline:
    return t2i.load(runs.b / "model")


@pytest.fixture(scope="module")
def full(runs) -> WuerstchenPipeline:
    return t2i.load(runs.c / "model")


def logged_losses(run: Path) -> list[float]:
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [rec["loss"] for rec in log if "loss" in rec]


def test_both_recipes_finish_with_logs_samples_and_folders(runs):
    assert runs.codes == [0, 0]
    for run in (runs.b, runs.c):
        losses = logged_losses(run)
        assert losses and all(math.isfinite(x) and x > 0 for x in losses)
        assert (run / "samples" / "step-000004.png").is_file()
    index = json.loads((runs.c / "model" / "model_index.json").read_text())
    assert index["family"] == "wuerstchen" and index["base"] == "prior"
    assert STAGE_C_KEY in json.loads((runs.c / "model" / "prior" / "model_index.json").read_text())
    assert "base" not in json.loads((runs.b / "model" / "model_index.json").read_text())


def test_a_stage_b_folder_redraws_images_and_refuses_a_prompt(stage_b):
    assert isinstance(stage_b, WuerstchenPipeline) and stage_b.base is None
    assert stage_b.family == "wuerstchen"
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    redrawn = stage_b.reconstruct(images, seed=3, steps=4)
    assert redrawn.shape == images.shape
    assert redrawn.min() >= -1 and redrawn.max() <= 1
    assert torch.equal(redrawn, stage_b.reconstruct(images, seed=3, steps=4))
    assert stage_b.semantic_grid(images).shape == (2, 4, 4, 4)
    with pytest.raises(ValueError, match="stage C"):
        stage_b.generate(stage_b.params(PROMPT, seed=1, steps=4), 1)


def test_the_stage_c_folder_draws_seeded_images(full):
    assert isinstance(full, WuerstchenPipeline) and full.family == "wuerstchen"
    assert full.base is not None and full.base.image_channels == 4
    batch = full.generate(full.params(PROMPT, seed=7, steps=4), 2)
    assert batch.shape == (2, 3, 32, 32) and torch.isfinite(batch).all()
    alone = full.generate(full.params(PROMPT, seed=8, steps=4), 1)
    assert torch.allclose(batch[1], alone[0], atol=1e-3)  # image i is seed + i made alone
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)


def test_the_stage_c_subfolder_alone_is_refused(runs):
    with pytest.raises(ValueError, match="stage C"):
        t2i.load(runs.c / "model" / "prior")


def test_a_stage_c_of_another_grid_is_refused(runs, stage_b):
    parts, index = load_model_folder(runs.c / "model" / "prior")
    good = Pipeline(parts, index)
    check_semantic_stages(good, stage_b.upscaler, stage_b.semantic)  # the trained pair fits
    wrong_channels = {**parts, "unet": UNet(replace(parts["unet"].config, in_channels=3))}
    bad = Pipeline(wrong_channels, index)
    with pytest.raises(ValueError, match="draws 4x4x3; stage B reads a 4x4x4 grid"):
        check_semantic_stages(bad, stage_b.upscaler, stage_b.semantic)
    with pytest.raises(ValueError, match="draws 4x4x3"):
        WuerstchenPipeline(bad, stage_b.upscaler, stage_b.semantic)
    bigger = Pipeline(parts, {**index, "image_size": 8})
    with pytest.raises(ValueError, match="draws 8x8x4"):
        check_semantic_stages(bigger, stage_b.upscaler, stage_b.semantic)


def equal_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_export_writes_folders_that_draw_as_the_runs_own(runs, full, stage_b, tmp_path):
    assert t2i_main(["export", str(runs.b), "--out", str(tmp_path / "b")]) == 0
    half = t2i.load(tmp_path / "b")  # float16 by default
    assert isinstance(half, WuerstchenPipeline) and half.base is None
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.isfinite(half.reconstruct(images, steps=2)).all()
    out = tmp_path / "c"
    assert t2i_main(["export", str(runs.c), "--out", str(out), "--dtype", "float32"]) == 0
    exported = t2i.load(out)
    assert isinstance(exported, WuerstchenPipeline) and exported.base is not None
    for name in ("unet", "text_encoder"):
        assert equal_weights(getattr(exported.base, name), getattr(full.base, name))
    assert equal_weights(exported.semantic, full.semantic)
    assert equal_weights(exported.upscaler.unet, full.upscaler.unet)
    p = full.params(PROMPT, seed=4, steps=4)
    assert torch.allclose(exported.generate(p, 1), full.generate(p, 1), atol=1e-4)


# ---------------------------------------------------------------- refused before any work


def test_stage_b_needs_an_autoencoder_and_a_grid_wide_cond(runs, emoji32, tmp_path, capsys):
    args = ["train", "wuerstchen_b", "--data", str(emoji32), "--preset", "tiny", "--no-progress"]
    assert t2i_main([*args, "--out", str(tmp_path / "x")]) == 2
    assert "--autoencoder" in capsys.readouterr().err
    flags = ["--autoencoder", str(runs.root / "ae"), "--model.cond_channels", "8"]
    assert t2i_main([*args, "--out", str(tmp_path / "y"), *flags]) == 2
    err = capsys.readouterr().err
    assert "cond_channels 8" in err and "semantic.out_channels 4" in err
    assert not (tmp_path / "x" / "checkpoints").exists()
    assert not (tmp_path / "y" / "checkpoints").exists()


def test_stage_c_needs_a_stage_b_folder(runs, emoji32, tmp_path, capsys):
    args = ["train", "wuerstchen_c", "--data", str(emoji32), "--preset", "tiny", "--no-progress"]
    args += ["--out", str(tmp_path / "x")]
    assert t2i_main(args) == 2
    assert "--stage-b" in capsys.readouterr().err
    plain = write_tiny_model(tmp_path / "plain", latent=True)
    for not_b in (plain, runs.c / "model"):  # a diffusion model; a whole Würstchen folder
        assert t2i_main([*args, "--stage-b", str(not_b)]) == 2
        assert "not a `t2i train wuerstchen_b` model folder" in capsys.readouterr().err
    flags = ["--stage-b", str(runs.b / "model"), "--model.in_channels", "8"]
    assert t2i_main([*args, *flags]) == 2  # stage C must draw stage B's 4x4x4 grid
    assert "must be stage B's grid: 4 and 4" in capsys.readouterr().err
    assert not (tmp_path / "x" / "checkpoints").exists()
