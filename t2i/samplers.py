"""Samplers: one plain function per algorithm, one signature.

    sample_x(model, x, sigmas, extra_args=None, callback=None, generator=None, **options) -> x0

model(x, sigma (B,), **extra_args) -> denoised is any denoiser in sigma-space (x = x0 + sigma*eps);
x starts as noise * sigmas[0]; sigmas are descending and usually end in 0. `generator` is None, one
torch.Generator, or a list of B generators: then image i draws its noise from generator i only, so
a batch equals its images generated one by one. `callback` gets {"i", "x", "sigma", "sigma_next",
"denoised"} after each step, where x is the new sample at sigma_next.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from t2i.schedules import DiscreteSchedule, discrete_sigmas, sigmas_exponential, sigmas_karras

Generators = torch.Generator | Sequence[torch.Generator] | None
SCHEDULES = ("auto", "discrete", "karras", "exponential")


def randn_like_per_item(x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """Standard normal noise shaped like x (B, ...); item i comes from generator[i] alone."""
    if generator is None:
        return torch.randn_like(x)
    if isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(
            x.device
        )
    if len(generator) != x.shape[0]:
        raise ValueError(
            f"got {len(generator)} generators for a batch of {x.shape[0]}; pass one per image"
        )
    noise = [
        torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=g.device) for g in generator
    ]
    return torch.stack(noise).to(x.device)


def _check(x: torch.Tensor, sigmas: torch.Tensor, extra_args, generator) -> tuple[list, dict]:
    """Validate the common arguments; return sigmas as Python floats and extra_args as a dict."""
    sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(
            f"sigmas must be 1-D with >= 2 values (steps >= 1), got {tuple(sigmas.shape)}"
        )
    if (sigmas < 0).any() or sigmas.isnan().any():
        raise ValueError(f"sigmas must be >= 0, got {sigmas.tolist()}")
    if (sigmas[1:] > sigmas[:-1]).any():
        raise ValueError(f"sigmas must be non-increasing, got {sigmas.tolist()}")
    if sigmas[0] == 0:
        raise ValueError("sigmas[0] must be > 0")
    if generator is not None and not isinstance(generator, torch.Generator):
        if len(generator) != x.shape[0]:
            raise ValueError(
                f"got {len(generator)} generators for a batch of {x.shape[0]}; pass one per image"
            )
    return sigmas.tolist(), dict(extra_args or {})


def _denoise(model, x: torch.Tensor, sigma: float, extra_args: dict) -> torch.Tensor:
    return model(x, x.new_full((x.shape[0],), sigma), **extra_args)


def _report(callback, i, x, sigma, sigma_next, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """DDIM's sigma_eta in sigma-space: sigma_next^2 = sigma_down^2 + sigma_up^2 (Song et al. 2021,
    eq. 16); eta = 1 is the DDPM posterior variance (beta tilde), eta = 0 is deterministic."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    sigma_up = min(
        sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
    )
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


# ---------------------------------------------------------------- first order


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, generator=None):
    """Euler on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma (EDM, Alg. 1)."""
    sigmas, extra_args = _check(x, sigmas, extra_args, generator)
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = _denoise(model, x, sigma, extra_args)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model, x, sigmas, extra_args=None, callback=None, generator=None, eta=1.0, s_noise=1.0
):
    """Euler step down to sigma_down, then fresh noise up to sigma_next (k-diffusion's Euler a)."""
    sigmas, extra_args = _check(x, sigmas, extra_args, generator)
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = _denoise(model, x, sigma, extra_args)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = x + (x - denoised) / sigma * (sigma_down - sigma)
        if sigma_up > 0:
            x = x + randn_like_per_item(x, generator) * (s_noise * sigma_up)
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


def sample_ddim(model, x, sigmas, extra_args=None, callback=None, generator=None, eta=0.0):
    """DDIM (Song et al. 2021, eq. 12) in sigma-space: eta = 0 is Euler on the given sigmas (pass
    the model's discrete sigmas, `sigmas_for(model, n)`), eta > 0 is ancestral Euler."""
    return sample_euler_ancestral(model, x, sigmas, extra_args, callback, generator, eta=eta)


@torch.no_grad()
def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, generator=None, variance=None):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) between consecutive given sigmas.

    The mean is the posterior mean of q(x_next | x, x0 = D(x)); the variance is beta tilde (the
    posterior's) or beta (the forward step's), both expressed in sigma-space, or "learned": the
    model's own (`sample_ddpm_learned`). None: the model's own where it learns one (as diffusers'
    DDPM scheduler reads a model's variance type), else beta tilde. No noise is added on the last
    step to sigma 0.
    """
    if variance is None:
        variance = "learned" if getattr(model, "learns_variance", False) else "beta_tilde"
    if variance == "learned":
        return sample_ddpm_learned(model, x, sigmas, extra_args, callback, generator)
    if variance not in ("beta_tilde", "beta"):
        raise ValueError(
            f"unknown variance {variance!r}; choose from ['beta', 'beta_tilde', 'learned']"
        )
    sigmas, extra_args = _check(x, sigmas, extra_args, generator)
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = _denoise(model, x, sigma, extra_args)
        x = denoised + (sigma_next**2 / sigma**2) * (x - denoised)
        if sigma_next > 0:
            if variance == "beta_tilde":
                var = sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2
            else:  # beta_t = 1 - abar_t / abar_next, scaled by 1 / abar_next
                var = (sigma**2 - sigma_next**2) * (1 + sigma_next**2) / (1 + sigma**2)
            x = x + randn_like_per_item(x, generator) * math.sqrt(var)
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_ddpm_learned(model, x, sigmas, extra_args=None, callback=None, generator=None):
    """DDPM ancestral sampling with the model's own variance (Nichol & Dhariwal 2021): the
    posterior mean as `sample_ddpm`, the log variance v log beta + (1 - v) log beta~ of the step
    between the given sigmas (so few steps use their respaced betas), v from
    `model.with_variance` (a t2i.denoisers.LearnedVariance). v = 0 is sample_ddpm's
    "beta_tilde", v = 1 its "beta"."""
    if not getattr(model, "learns_variance", False):
        raise ValueError("sample_ddpm_learned needs a model that learns its variance")
    sigmas, extra_args = _check(x, sigmas, extra_args, generator)
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        s = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        denoised, v = model.with_variance(x, s, **extra_args)
        x = denoised + (sigma_next**2 / sigma**2) * (x - denoised)
        if sigma_next > 0:
            small = math.log(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
            large = math.log((sigma**2 - sigma_next**2) * (1 + sigma_next**2) / (1 + sigma**2))
            std = (0.5 * (v * large + (1 - v) * small)).exp()
            x = x + randn_like_per_item(x, generator) * std
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, generator=None):
    """Multistep consistency sampling: jump to x0, re-noise to the next sigma (Luo et al. 2023,
    Algorithm 1). Meant for consistency / LCM-distilled models, whose D maps x to the ODE's end."""
    sigmas, extra_args = _check(x, sigmas, extra_args, generator)
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = _denoise(model, x, sigma, extra_args)
        x = denoised
        if sigma_next > 0:
            x = denoised + randn_like_per_item(x, generator) * sigma_next
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_mcm(model, x, sigmas, extra_args=None, callback=None, generator=None):
    """Multistep consistency sampling (Heek et al. 2024): from each segment's top, a DDIM step
    with the student's x0 estimate straight to the segment's end, no fresh noise. Meant for
    multistep consistency students (`t2i train lcm --preset multistep`), whose D maps x to where
    the ODE crosses the next of the sigmas it was distilled on."""
    return sample_euler(model, x, sigmas, extra_args, callback, generator)


# ---------------------------------------------------------------- second order


@torch.no_grad()
def sample_heun(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    generator=None,
    s_churn=0.0,  # 0: deterministic; total extra noise over the run (EDM's S_churn)
    s_tmin=0.0,  # churn only where s_tmin <= sigma <= s_tmax
    s_tmax=float("inf"),
    s_noise=1.0,
):
    """Heun's 2nd-order method with optional churn (Karras et al. 2022, Algorithm 2)."""
    sigmas, extra_args = _check(x, sigmas, extra_args, generator)
    n = len(sigmas) - 1
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:  # raise the noise level to sigma_hat
            eps = randn_like_per_item(x, generator) * s_noise
            x = x + eps * math.sqrt(sigma_hat**2 - sigma**2)
        denoised = _denoise(model, x, sigma_hat, extra_args)
        d = (x - denoised) / sigma_hat
        x_next = x + d * (sigma_next - sigma_hat)
        if sigma_next > 0:  # trapezoidal correction; the last step to 0 stays Euler
            d_next = (x_next - _denoise(model, x_next, sigma_next, extra_args)) / sigma_next
            x_next = x + (d + d_next) / 2 * (sigma_next - sigma_hat)
        x = x_next
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, generator=None):
    """DPM-Solver++(2M): multistep 2nd order in lambda = -log sigma (Lu et al. 2022, Alg. 2)."""
    sigmas, extra_args = _check(x, sigmas, extra_args, generator)
    old_denoised, h_last = None, None
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = _denoise(model, x, sigma, extra_args)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            d = denoised
            if old_denoised is not None:  # linear extrapolation of D in lambda
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * d
            h_last = h
        old_denoised = denoised
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model, x, sigmas, extra_args=None, callback=None, generator=None, eta=1.0, s_noise=1.0
):
    """DPM-Solver++(2M) SDE, midpoint variant (Lu et al. 2022, Sec. 5; as in k-diffusion)."""
    sigmas, extra_args = _check(x, sigmas, extra_args, generator)
    old_denoised, h_last = None, None
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = _denoise(model, x, sigma, extra_args)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma / sigma_next)
            eta_h = eta * h
            c = -math.expm1(-h - eta_h)
            x = (sigma_next / sigma) * math.exp(-eta_h) * x + c * denoised
            if old_denoised is not None:
                x = x + (0.5 * c * h / h_last) * (denoised - old_denoised)
            if eta > 0:
                noise = randn_like_per_item(x, generator)
                x = x + noise * (sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
            h_last = h
        old_denoised = denoised
        _report(callback, i, x, sigma, sigma_next, denoised)
    return x


# ---------------------------------------------------------------- registry and sigmas

SAMPLERS: dict[str, Callable] = {
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "lcm": sample_lcm,
    "mcm": sample_mcm,
}
# the samplers that step on a consistency student's distillation grid (schedules.lcm_timesteps)
CONSISTENCY_SAMPLERS = ("lcm", "mcm")


def get_sampler(name: str) -> Callable:
    """The sampler function registered under `name`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def sigmas_for(
    model,
    steps: int,
    schedule: str = "auto",
    spacing: str = "trailing",
    rho: float = 7.0,
) -> torch.Tensor:
    """The (steps+1,) sigmas to sample `model` (a denoiser or a DiscreteSchedule) in `steps` steps.

    schedule "discrete": the model's own training sigmas at `spacing`d timesteps (what DDPM/DDIM
    use); "karras" / "exponential": continuous between model.sigma_min and model.sigma_max;
    "auto": discrete when the model has discrete sigmas, else karras.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {list(SCHEDULES)}")
    table = (
        model.sigmas() if isinstance(model, DiscreteSchedule) else getattr(model, "sigmas", None)
    )
    if schedule == "auto":
        schedule = "discrete" if table is not None else "karras"
    if schedule == "discrete":
        if table is None:
            raise ValueError("schedule 'discrete' needs a model with discrete sigmas; use 'karras'")
        return discrete_sigmas(table, steps, spacing)
    lo, hi = (table[0].item(), table[-1].item()) if table is not None else (None, None)
    sigma_min, sigma_max = getattr(model, "sigma_min", lo), getattr(model, "sigma_max", hi)
    if schedule == "karras":
        return sigmas_karras(steps, sigma_min, sigma_max, rho)
    return sigmas_exponential(steps, sigma_min, sigma_max)
