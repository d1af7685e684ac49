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


def test_unknown_timesteps_and_edm_with_a_timestep_option_are_refused():
    cfg = diffusion.preset("tiny")
    cfg.timesteps = "cosine"
    with pytest.raises(ValueError, match="unknown timesteps 'cosine'.*uniform"):
        diffusion.check(cfg)
    cfg.timesteps, cfg.parameterisation = "logit_normal", "edm"
    with pytest.raises(ValueError, match="edm draws its own sigmas"):
        diffusion.check(cfg)
