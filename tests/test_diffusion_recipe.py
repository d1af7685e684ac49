"""Recipe options of `t2i train diffusion` that need no training run to check."""

from __future__ import annotations

import pytest
import torch

from t2i.training import diffusion


def test_logit_normal_timesteps_lean_to_high_noise_and_stay_on_the_schedule():
    cfg = diffusion.preset("tiny")
    denoiser = diffusion.make_denoiser(cfg, torch.nn.Identity())
    uniform = diffusion.training_sigmas(cfg, denoiser)(4000, torch.Generator().manual_seed(0))
    cfg.timesteps, cfg.timestep_mean = "logit_normal", 1.0
    draw = diffusion.training_sigmas(cfg, denoiser)
    shifted = draw(4000, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, draw(4000, torch.Generator().manual_seed(0)))  # seeded: resumable
    assert torch.isin(shifted, denoiser.sigmas).all()  # the schedule's own sigmas only
    # sigmoid(1) = 0.73: the median timestep moves from T/2 to ~0.73 T
    assert shifted.median() > 2 * uniform.median()
    assert (shifted > 20).float().mean() > 1.5 * (uniform > 20).float().mean()


def test_a_timestep_mix_puts_that_fraction_of_draws_on_the_logit_normal():
    cfg = diffusion.preset("tiny")
    denoiser = diffusion.make_denoiser(cfg, torch.nn.Identity())
    cfg.timesteps, cfg.timestep_mean = "logit_normal", 3.0  # nearly every draw above T/2
    top = denoiser.sigmas[len(denoiser.sigmas) // 2]
    high = {}
    for mix in (1.0, 0.5):
        cfg.timestep_mix = mix
        draws = diffusion.training_sigmas(cfg, denoiser)(8000, torch.Generator().manual_seed(1))
        assert torch.isin(draws, denoiser.sigmas).all()
        high[mix] = (draws > top).float().mean().item()
    assert high[1.0] > 0.95
    # half the batch from the logit-normal (~0.98 above T/2), half uniform (0.5 above): ~0.74
    assert abs(high[0.5] - 0.74) < 0.03


def test_unknown_timesteps_and_edm_with_a_timestep_option_are_refused():
    cfg = diffusion.preset("tiny")
    cfg.timesteps = "cosine"
    with pytest.raises(ValueError, match="unknown timesteps 'cosine'.*uniform"):
        diffusion.check(cfg)
    cfg.timesteps, cfg.parameterisation = "logit_normal", "edm"
    with pytest.raises(ValueError, match="edm draws its own sigmas"):
        diffusion.check(cfg)
    cfg.parameterisation = "x0"
    for mix in (0.0, 1.5):
        cfg.timestep_mix = mix
        with pytest.raises(ValueError, match=f"timestep_mix {mix} must be in"):
            diffusion.check(cfg)
    cfg.timesteps, cfg.timestep_mix = "uniform", 0.5
    with pytest.raises(ValueError, match="needs timesteps logit_normal, not 'uniform'"):
        diffusion.check(cfg)


def test_edm_sigma_data_reaches_the_denoiser_and_the_model_folder(tmp_path):
    import json

    from t2i.pipeline import Pipeline
    from tests.tiny_models import write_tiny_model

    cfg = diffusion.preset("tiny")
    cfg.parameterisation, cfg.sigma_data = "edm", 1.0
    denoiser = diffusion.make_denoiser(cfg, lambda x, t, **_: torch.zeros_like(x))
    x, sigma = torch.ones(1, 3, 4, 4), torch.tensor([1.0])
    # a network that says 0 leaves c_skip * x = sd^2 / (sigma^2 + sd^2) * x: 1/2 at sd = sigma = 1
    torch.testing.assert_close(denoiser(x, sigma), 0.5 * x)
    cfg.p_mean = 0.5  # training noise levels centred on sigma e^0.5
    drawn = diffusion.make_denoiser(cfg, None).training_sigmas(
        4000, torch.Generator().manual_seed(0)
    )
    assert abs(drawn.log().median().item() - 0.5) < 0.1
    cfg.sigma_data = 0.0
    with pytest.raises(ValueError, match="sigma_data must be > 0, got 0.0"):
        diffusion.check(cfg)

    folder = write_tiny_model(tmp_path / "m", parameterisation="edm")
    assert (
        Pipeline.from_pretrained(folder).denoiser.sigma_data == 0.5
    )  # folders from before: the default
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "sigma_data": 1.0}))
    assert Pipeline.from_pretrained(folder).denoiser.sigma_data == 1.0


@pytest.mark.parametrize("low_res", [0, 8])
def test_the_sample_grid_is_what_the_exported_folder_draws(tmp_path, low_res):
    """One generation path: the recipe's grid (live EMA networks) equals the images that the
    pipeline of its exported folder draws with the card's defaults, guidance interval included;
    an upscaler's grid redraws the data's first images from their small versions."""
    import argparse

    from t2i.cascade import CascadePipeline
    from t2i.families import load

    cfg = diffusion.preset("tiny")
    cfg.guidance_scale, cfg.guidance_interval = 4.0, (0.5, 20.0)
    if low_res:
        cfg.low_res, cfg.model.cond_channels = low_res, 3
    recipe = diffusion.build(cfg, argparse.Namespace(data="shapes"))
    recipe.export(recipe.model, tmp_path / "m")
    prompts = [recipe.dataset[i]["caption"] for i in range(3)]
    text = diffusion.TextCache.load(cfg.text_encoder, cfg.max_tokens)
    low = None
    if low_res:
        low = torch.stack([diffusion.small_image(recipe.dataset[i], low_res) for i in range(3)])
    live = diffusion.generate(cfg, recipe.model, text, None, prompts, 5, low)
    folder = load(tmp_path / "m")
    assert folder.defaults["guidance_interval"] == [0.5, 20.0]
    items = [folder.params(p, seed=5 + i) for i, p in enumerate(prompts)]
    if low_res:  # an upscaler folder without a base: a cascade that takes the small images
        assert isinstance(folder, CascadePipeline)
        drawn = folder.draw_from(items[0], [5, 6, 7], folder.encode_text(prompts), low)
    else:
        drawn = folder.generate_items(items)
    torch.testing.assert_close(live, drawn, rtol=0, atol=0)
    grid = recipe.sample(recipe.model)
    assert grid.size[0] > 0
