"""Latent consistency distillation (t2i/training/lcm.py): the loss falls, the w-embedding is an
input that starts as nothing, runs resume bit for bit, and the student loads as a model."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from resume_check import losses_on_one_batch
from test_training_cli import straight_and_killed
from tiny_models import write_tiny_model

from t2i.denoisers import (
    ConsistencyFunction,
    EDMDenoiser,
    EpsDenoiser,
    GaussianMixtureDenoiser,
    consistency_scalings,
)
from t2i.models.unet import UNet, UNetConfig
from t2i.schedules import DiscreteSchedule, lcm_grid, lcm_timesteps
from t2i.training import diffusion_lcm as lcm


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("teacher") / "tiny", steps=2)


def test_the_grid_and_the_card_timesteps_are_luos():
    assert lcm_grid(1000, 50)[:3] == [999, 979, 959] and lcm_grid(1000, 50)[-1] == 19
    assert lcm_timesteps(4) == [999, 759, 499, 259]  # as LCM's own scheduler picks them
    assert lcm_timesteps(1) == [999] and lcm_timesteps(2) == [999, 499]
    assert set(lcm_timesteps(8)) <= set(lcm_grid())
    with pytest.raises(ValueError, match="<= the distillation grid's 50"):
        lcm_timesteps(51)


def test_the_boundary_condition_holds_at_t0_and_vanishes_above():
    c_skip, c_out = consistency_scalings(torch.tensor([0.0, 1.0, 19.0]))
    assert c_skip[0] == 1 and c_out[0] == 0
    assert c_skip[1] < 3e-3 and c_skip[2] < 1e-5 and c_out[2] > 1 - 1e-5
    net = UNet(UNetConfig.preset("tiny", context_dim=0))
    f = ConsistencyFunction(EpsDenoiser(net, DiscreteSchedule.preset("ddpm")))
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(f(x, f.inner.sigma_min), x)  # f(x, t=0) = x exactly
    with pytest.raises(ValueError, match="discrete .VP. model"):
        ConsistencyFunction(EDMDenoiser(net))


def gaussian_ode_end(x, mu, s, sigma, sigma_next):
    """The exact probability-flow ODE of N(mu, s^2) data from sigma to sigma_next."""
    return mu + (x - mu) * math.sqrt(s**2 + sigma_next**2) / math.sqrt(s**2 + sigma**2)


def test_the_second_order_solver_follows_the_exact_ode_closer_than_ddim():
    mu, s = 0.7, 0.3
    gm = GaussianMixtureDenoiser(torch.full((1, 4), mu), torch.tensor([s]), torch.ones(1))
    x = (torch.randn(16, 4) * 2 + mu).double()
    sigma, sigma_next = torch.full((16,), 2.0).double(), torch.full((16,), 1.5).double()
    exact = gaussian_ode_end(x, mu, s, 2.0, 1.5)
    errors = {}
    for solver in lcm.SOLVERS:
        out = lcm.solver_step(solver, lambda x_, s_: gm(x_, s_), x, sigma, sigma_next)
        errors[solver] = (out - exact).abs().max().item()
    assert errors["dpmpp_2s"] < errors["ddim"] / 5, errors


def test_a_fresh_w_embedding_is_the_teacher_and_a_trained_one_reads_w():
    torch.manual_seed(0)
    teacher = UNet(UNetConfig.preset("tiny"))
    student = UNet(UNetConfig.preset("tiny", guidance_embedding=True))
    missing = student.load_state_dict(teacher.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["guidance_proj.bias", "guidance_proj.weight"]
    x, t, ctx = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 500.0]), torch.randn(2, 4, 32)
    with torch.no_grad():
        base = teacher(x, t, ctx)
        assert torch.equal(student(x, t, ctx, guidance=torch.tensor([1.0, 7.0])), base)
        torch.nn.init.normal_(student.guidance_proj.weight, std=0.1)
        low = student(x, t, ctx, guidance=torch.tensor([1.5, 1.5]))
        high = student(x, t, ctx, guidance=torch.tensor([6.0, 6.0]))
    assert (low - high).abs().max() > 1e-3
    with pytest.raises(ValueError, match="pass guidance"):
        student(x, t, ctx)
    with pytest.raises(ValueError, match="no guidance embedding"):
        teacher(x, t, ctx, guidance=torch.ones(2))


def built(teacher, preset: str, **overrides):
    args = argparse.Namespace(init=str(teacher), data="shapes", autoencoder=None, no_progress=True)
    cfg = lcm.adopt(lcm.preset(preset), args)
    for key, value in overrides.items():
        setattr(cfg.lcm, key, value)
    return lcm.build(cfg, args)


@pytest.mark.parametrize("preset", ["tiny", "tiny_full", "tiny_multistep"])
def test_the_distillation_loss_falls_on_a_tiny_model(teacher, preset):
    recipe = built(teacher, preset)
    batch = recipe.collate([recipe.dataset[i] for i in range(8)])
    losses = losses_on_one_batch(recipe, batch)
    assert losses[-1] < 0.7 * losses[0], losses[::8]


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, sampler", [("tiny", "lcm"), ("tiny_full", "lcm"), ("tiny_multistep", "mcm")]
)
def test_lcm_training_resumes_bit_for_bit(teacher, tmp_path, preset, sampler):
    args = ["lcm", "--teacher", str(teacher), "--data", "shapes", "--preset", preset]
    args += ["--no-progress", "--loop.steps", "6", "--loop.ckpt_every", "3"]
    a, b, killed = straight_and_killed(args, tmp_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    index = json.loads((killed / "model" / "model_index.json").read_text())
    assert index["sampler"]["name"] == sampler
    assert index["consistency"]["timesteps"]["2"] == lcm_timesteps(2, 1000, 10)


def test_a_multistep_map_ends_at_the_next_segment_top_and_the_last_at_the_data():
    table = DiscreteSchedule.preset("ddpm").sigmas()
    grid = torch.tensor(lcm_grid(1000, 10))  # 999, 899, ..., 99
    ends = lcm.segment_ends(table, grid, lcm_timesteps(2, 1000, 10))  # tops 999, 499
    expected = [table[499]] * 5 + [torch.tensor(0.0)] * 5
    assert torch.equal(ends, torch.stack(expected).to(ends.dtype))


def test_segments_must_be_the_card_steps(teacher):
    with pytest.raises(ValueError, match="segments 3: .* sample_steps \\(2\\)"):
        built(teacher, "tiny_multistep", segments=3)


def test_the_exact_multistep_map_is_a_fixed_point_of_its_target():
    """For N(mu, s^2) data the ODE runs x(sigma) = mu + (x - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 +
    sigma0^2). The x0 estimate whose DDIM step lands on the exact segment end is its own target
    when the teacher steps exactly; one that maps to the ODE's end (LCM's) is not."""
    mu, s = 0.7, 0.4
    ode = lambda x, a, b: mu + (x - mu) * ((s**2 + b**2) / (s**2 + a**2)) ** 0.5  # noqa: E731

    def exact(x, sigma, end):
        return (ode(x, sigma, end) - (end / sigma) * x) / (1 - end / sigma)

    x = torch.randn(64, 1, generator=torch.Generator().manual_seed(0)) * 9.0
    sigma, sigma_next = torch.full((64,), 9.0), torch.full((64,), 7.5)
    x_next = ode(x, 9.0, 7.5)
    for end in (torch.full((64,), 3.0), torch.full((64,), 7.5), torch.zeros(64)):
        d_next = exact(x_next, 7.5, end[0]) if end[0] < 7.5 else torch.zeros_like(x)
        target = lcm.multistep_target(x, sigma, x_next, sigma_next, d_next, end)
        assert torch.allclose(target, exact(x, 9.0, end[0]), atol=1e-4)
    to_end = ode(x_next, 7.5, torch.tensor(0.0))  # LCM's map, read as an x0 estimate
    target = lcm.multistep_target(x, sigma, x_next, sigma_next, to_end, torch.full((64,), 3.0))
    assert not torch.allclose(target, exact(x, 9.0, torch.tensor(3.0)), atol=1e-2)
