"""Schedules: closed forms, their diffusers counterparts, sigma <-> t and the forward process."""

import math

import pytest
import torch

from t2i.schedules import (
    DiscreteSchedule,
    discrete_sigmas,
    q_sample,
    q_sample_vp,
    sigma_to_t,
    sigmas_exponential,
    sigmas_karras,
    t_to_sigma,
    timesteps,
)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "preset, kwargs",
    [
        ("ddpm", dict(beta_schedule="linear")),
        ("sd", dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)),
        ("cosine", dict(beta_schedule="squaredcos_cap_v2")),
    ],
)
@pytest.mark.parametrize("zero_snr", [False, True])
def test_betas_match_diffusers(preset, kwargs, zero_snr):
    """Reference: diffusers.DDPMScheduler.betas / alphas_cumprod (scheduling_ddpm.py)."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(**kwargs, rescale_betas_zero_snr=zero_snr)
    sched = DiscreteSchedule.preset(preset)
    sched.zero_terminal_snr = zero_snr
    # diffusers rescales in float32 (1 - abar_0 cancels), we in float64: looser there
    rtol, atol = (1e-4, 1e-6) if zero_snr else (1e-5, 1e-7)
    torch.testing.assert_close(sched.betas().float(), ref.betas, rtol=rtol, atol=atol)
    torch.testing.assert_close(
        sched.alphas_cumprod().float(), ref.alphas_cumprod, rtol=rtol, atol=atol
    )


def test_zero_terminal_snr_ends_at_zero_and_keeps_first():
    plain, rescaled = DiscreteSchedule.preset("sd"), DiscreteSchedule.preset("sd")
    rescaled.zero_terminal_snr = True
    abar = rescaled.alphas_cumprod()
    assert abar[-1].abs() < 1e-12  # SNR(T) = 0
    assert torch.isclose(abar[0], plain.alphas_cumprod()[0])
    assert rescaled.sigmas()[-1] > 1000  # clamped, finite


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 10, 50])
def test_timesteps_match_diffusers_euler(spacing, steps):
    """Reference: diffusers.EulerDiscreteScheduler.timesteps for each timestep_spacing."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.EulerDiscreteScheduler(timestep_spacing=spacing)
    ref.set_timesteps(steps)
    torch.testing.assert_close(timesteps(steps, 1000, spacing).float(), ref.timesteps)


def test_karras_and_exponential_endpoints():
    k = sigmas_karras(10, 0.002, 80.0, rho=7.0)
    assert len(k) == 11 and k[-1] == 0
    assert math.isclose(k[0].item(), 80.0, rel_tol=1e-6)
    assert math.isclose(k[-2].item(), 0.002, rel_tol=1e-5)
    ramp = k[:-1].double() ** (1 / 7)  # evenly spaced in sigma^(1/rho)
    torch.testing.assert_close(ramp.diff(), ramp.diff()[:1].expand(9), rtol=1e-4, atol=0)
    e = sigmas_exponential(5, 0.1, 10.0)
    torch.testing.assert_close(
        e[:-1].log().diff(), torch.full((4,), -math.log(100) / 4), rtol=1e-5, atol=0
    )


def test_sigma_t_round_trip():
    sigmas = DiscreteSchedule.preset("sd").sigmas()
    t = torch.tensor([0.0, 0.5, 17.25, 500.0, 998.9, 999.0])
    torch.testing.assert_close(sigma_to_t(t_to_sigma(t, sigmas), sigmas), t, rtol=0, atol=1e-3)
    integer = torch.arange(0, 1000, 37).float()
    torch.testing.assert_close(t_to_sigma(integer, sigmas), sigmas[integer.long()])
    # outside the table: clamped to the ends
    assert sigma_to_t(torch.tensor([1e-6, 1e6]), sigmas).tolist() == [0.0, 999.0]


def test_discrete_sigmas_descend_to_zero():
    s = discrete_sigmas(DiscreteSchedule().sigmas(), 4, "trailing")
    assert len(s) == 5 and s[-1] == 0 and (s.diff() < 0).all()
    torch.testing.assert_close(s[0], DiscreteSchedule().sigmas()[-1])


def test_discrete_sigmas_at_any_subset_of_timesteps():
    table = DiscreteSchedule().sigmas()
    s = discrete_sigmas(table, 0, at=[999, 700, 301, 0])
    torch.testing.assert_close(s, torch.cat([table[[999, 700, 301, 0]], torch.zeros(1)]))
    with pytest.raises(
        ValueError, match=r"timesteps must descend within \[0, 999\], got \[0, 500\]"
    ):
        discrete_sigmas(table, 0, at=[0, 500])


def test_schedule_dict_round_trip():
    sched = DiscreteSchedule.preset("sd")
    assert DiscreteSchedule.from_dict(sched.to_dict()) == sched
    with pytest.raises(ValueError, match=r"unknown schedule keys \['beta_max'\]; allowed: \["):
        DiscreteSchedule.from_dict({"beta_max": 0.02})


def test_q_sample_vp_is_scaled_sigma_space():
    """DDPM's q(x_t | x0) equals sigma-space noising scaled by sqrt(abar_t) (one step, any t)."""
    sched = DiscreteSchedule.preset("ddpm")
    abar, sigmas = sched.alphas_cumprod().float(), sched.sigmas()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = q_sample_vp(x0, t, noise, abar)
    x = q_sample(x0, sigmas[t], noise)
    torch.testing.assert_close(x_t, x * abar[t].sqrt().reshape(-1, 1, 1, 1), rtol=1e-5, atol=1e-5)


def test_forward_process_statistics():
    """x = x0 + sigma * eps has mean x0 and std sigma in one step."""
    x0 = torch.full((20000, 1), 1.5)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    x = q_sample(x0, 3.0, noise)
    assert abs(x.mean().item() - 1.5) < 0.1 and abs(x.std().item() - 3.0) < 0.05


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: timesteps(0), "steps must be an integer >= 1, got 0"),
        (
            lambda: timesteps(10, 1000, "middle"),
            r"unknown spacing 'middle'; choose from \['leading'",
        ),
        (lambda: sigmas_karras(10, 1.0, 0.5), "0 < sigma_min < sigma_max"),
        (lambda: DiscreteSchedule.preset("sdxl"), r"unknown schedule preset 'sdxl'; choose from"),
        (lambda: DiscreteSchedule("quadratic").betas(), r"unknown beta_schedule 'quadratic'"),
        (lambda: q_sample(torch.zeros(2), -1.0, torch.zeros(2)), "sigma must be >= 0, got -1.0"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
