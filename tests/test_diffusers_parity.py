"""Parity with an independent implementation: the diffusers schedulers (a test-only dependency).

The same eps-network and the same per-image generators drive both sides; after every step our
sigma-space sample x is compared with diffusers' sample: directly for the schedulers that work in
sigma-space (Euler, Euler ancestral, Heun), as x_t = x / sqrt(1 + sigma^2) for those that work in
VP space (DDIM, DDPM, DPM-Solver++). References, from diffusers 0.42 (diffusers/schedulers/):
  DDIM            scheduling_ddim.py              DDIMScheduler (Song et al. 2021)
  DDPM            scheduling_ddpm.py              DDPMScheduler, fixed_small / fixed_large variance
  Euler           scheduling_euler_discrete.py    EulerDiscreteScheduler
  Euler ancestral scheduling_euler_ancestral_discrete.py  EulerAncestralDiscreteScheduler
  Heun            scheduling_heun_discrete.py     HeunDiscreteScheduler
  DPM-Solver++    scheduling_dpmsolver_multistep.py  DPMSolverMultistepScheduler (2M, and 2M SDE)
"""

import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from t2i.denoisers import EpsDenoiser  # noqa: E402
from t2i.samplers import (  # noqa: E402
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sigmas_for,
)
from t2i.schedules import DiscreteSchedule  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
SHAPE, SEED = (3, 2, 4, 4), 1234


def eps_net(x_in, t, **_):
    """A fixed nonlinear eps-prediction of x and t (not an exact denoiser), with data of order 1."""
    t = torch.as_tensor(t, dtype=x_in.dtype).reshape(-1, 1, 1, 1)
    return 0.9 * x_in + 0.3 * torch.tanh(x_in.roll(1, dims=1) + t / 700) * torch.cos(t / 300)


def gens():
    return [torch.Generator().manual_seed(SEED + i) for i in range(SHAPE[0])]


def run_ours(sampler, steps, spacing, **kw):
    model = EpsDenoiser(eps_net, DiscreteSchedule.preset("sd"))
    sigmas = sigmas_for(model, steps, "discrete", spacing)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    xs = []
    sampler(
        model,
        noise * sigmas[0],
        sigmas,
        callback=lambda d: xs.append(d["x"]),
        generator=gens(),
        **kw,
    )
    return sigmas, noise, xs


def run_diffusers(sched, x, vp, step_kw=None):
    xs, kw = [], dict(step_kw or {})
    if "generator" in inspect.signature(sched.step).parameters:  # Heun's step takes none
        kw["generator"] = gens()
    for t in sched.timesteps:
        eps = eps_net(sched.scale_model_input(x, t), t)
        x = sched.step(eps, t, x, **kw).prev_sample
        xs.append(x)
    return xs


def assert_steps_match(ours, sigmas, theirs, vp):
    """Max abs difference < 1e-5 after every step, in VP units x_t = x / sqrt(1 + sigma^2) (data
    scale, |x_t| ~ 3 here) so that float32 rounding of |x| ~ 40 at sigma 14.6 is not compared."""
    assert len(ours) == len(theirs) > 0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        c_in = (1 + sigmas[i + 1] ** 2) ** -0.5
        a, b = a * c_in, (b if vp else b * c_in)
        err = (a - b).abs().max().item()
        assert err < 1e-5, f"step {i}: max abs diff {err:.2e}"


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches(spacing, eta):
    sched = diffusers.DDIMScheduler(
        **SD, clip_sample=False, set_alpha_to_one=True, timestep_spacing=spacing
    )
    sched.set_timesteps(10)
    sigmas, noise, ours = run_ours(sample_ddim, 10, spacing, eta=eta)
    x_t = noise * sigmas[0] / (1 + sigmas[0] ** 2) ** 0.5
    assert_steps_match(ours, sigmas, run_diffusers(sched, x_t, True, {"eta": eta}), vp=True)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_matches(variance):
    kind = {"beta_tilde": "fixed_small", "beta": "fixed_large"}[variance]
    sched = diffusers.DDPMScheduler(
        **SD, clip_sample=False, variance_type=kind, timestep_spacing="leading"
    )
    sched.set_timesteps(20)
    sigmas, noise, ours = run_ours(sample_ddpm, 20, "leading", variance=variance)
    x_t = noise * sigmas[0] / (1 + sigmas[0] ** 2) ** 0.5
    assert_steps_match(ours, sigmas, run_diffusers(sched, x_t, True), vp=True)


@pytest.mark.parametrize(
    "sampler, scheduler",
    [
        (sample_euler, diffusers.EulerDiscreteScheduler),
        (sample_euler_ancestral, diffusers.EulerAncestralDiscreteScheduler),
        (sample_heun, diffusers.HeunDiscreteScheduler),
    ],
)
def test_sigma_space_samplers_match(sampler, scheduler):
    sched = scheduler(**SD, timestep_spacing="trailing")
    sched.set_timesteps(12)
    sigmas, noise, ours = run_ours(sampler, 12, "trailing")
    theirs = run_diffusers(sched, noise * sigmas[0], False)
    if scheduler is diffusers.HeunDiscreteScheduler:  # predictor + corrector calls; last is Euler
        theirs = theirs[1::2] + theirs[-1:]
    assert_steps_match(ours, sigmas, theirs, vp=False)


@pytest.mark.parametrize(
    "sampler, algorithm",
    [(sample_dpmpp_2m, "dpmsolver++"), (sample_dpmpp_2m_sde, "sde-dpmsolver++")],
)
def test_dpmpp_2m_matches(sampler, algorithm):
    sched = diffusers.DPMSolverMultistepScheduler(
        **SD, algorithm_type=algorithm, solver_order=2, timestep_spacing="trailing"
    )
    sched.set_timesteps(15)
    sigmas, noise, ours = run_ours(sampler, 15, "trailing")
    x_t = noise * sigmas[0] / (1 + sigmas[0] ** 2) ** 0.5
    assert_steps_match(ours, sigmas, run_diffusers(sched, x_t, True), vp=True)
