"""Noise schedules as functions that return sigmas, and sigma <-> t for discrete (VP) models.

Everything lives in sigma-space: x = x0 + sigma * eps. A discrete DDPM model with cumulative
alphas abar_t is the VP view of the same process: x_t = sqrt(abar_t) * x, sigma_t =
sqrt((1 - abar_t) / abar_t). Sigma tensors returned for sampling are descending and end in 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from t2i.models.log_snr import LearnedLogSNR

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine", "learned")
SPACINGS = ("leading", "trailing", "linspace")


def _check_steps(steps: int, name: str = "steps") -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {steps!r}")


# ---------------------------------------------------------------- betas (DDPM family)


def betas_linear(n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM linear betas (Ho et al. 2020, Sec. 4). Returns (n,) float64."""
    _check_steps(n, "n")
    return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)


def betas_scaled_linear(
    n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """Stable Diffusion's betas: linear in sqrt(beta). Returns (n,) float64."""
    _check_steps(n, "n")
    return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2


def betas_cosine(n: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule, abar(t) = cos^2((t/n + s)/(1 + s) * pi/2) (Nichol & Dhariwal, eq. 17)."""
    _check_steps(n, "n")
    t = torch.arange(n + 1, dtype=torch.float64) / n
    abar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def betas_learned(n: int, log_snr: dict | None) -> torch.Tensor:
    """The betas of a learned schedule's n steps (t = i/n): abar_i = sigmoid(-gamma(i/n))."""
    if log_snr is None:
        raise ValueError("beta_schedule 'learned' needs its log_snr parameters")
    sigmas = LearnedLogSNR.from_dict(log_snr).sigmas(n)
    return betas_from_abar(1 / (1 + sigmas**2))


def betas_from_abar(abar: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - abar_t / abar_{t-1} (abar_{-1} = 1): the inverse of `alphas_cumprod`."""
    return 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(abar) so the last step has SNR 0 (Lin et al. 2023, Algorithm 1)."""
    sqrt_abar = torch.cumprod(1 - betas.double(), 0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    return betas_from_abar(sqrt_abar**2)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s)."""
    return torch.cumprod(1 - betas, 0)


def vp_sigmas(abar: torch.Tensor) -> torch.Tensor:
    """Discrete sigmas of a VP model, ascending in t: sigma_t = sqrt((1 - abar_t) / abar_t)."""
    # zero terminal SNR gives abar = 0 (sigma = inf); clamp as diffusers does (2**-24)
    return ((1 - abar) / abar.clamp(min=2**-24)).sqrt()


@dataclass
class DiscreteSchedule:
    """The training noise schedule of a discrete (VP) model; saved in model_index.json."""

    beta_schedule: str = "linear"  # one of BETA_SCHEDULES
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4  # ignored by "cosine"
    beta_end: float = 0.02  # ignored by "cosine"
    zero_terminal_snr: bool = False  # rescale so sigma_{T-1} is (almost) infinite
    # beta_schedule "learned": a LearnedLogSNR's parameters (t2i/models/log_snr.py), the
    # discrete steps at t = 1/T, ..., 1 of its continuous gamma(t)
    log_snr: dict | None = None

    @staticmethod
    def preset(name: str) -> DiscreteSchedule:
        presets = {
            "ddpm": DiscreteSchedule(),
            "sd": DiscreteSchedule("scaled_linear", 1000, 0.00085, 0.012),
            "cosine": DiscreteSchedule("cosine"),
        }
        if name not in presets:
            raise ValueError(f"unknown schedule preset {name!r}; choose from {sorted(presets)}")
        return presets[name]

    def to_dict(self) -> dict:
        """The fields, without log_snr where a fixed schedule has none (as model folders
        written before learned schedules record it)."""
        d = asdict(self)
        if d["log_snr"] is None:
            del d["log_snr"]
        return d

    @staticmethod
    def from_dict(d: dict) -> DiscreteSchedule:
        allowed = sorted(asdict(DiscreteSchedule()))
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ValueError(f"unknown schedule keys {unknown}; allowed: {allowed}")
        return DiscreteSchedule(**d)

    def betas(self) -> torch.Tensor:
        n = self.num_train_timesteps
        if self.beta_schedule == "linear":
            betas = betas_linear(n, self.beta_start, self.beta_end)
        elif self.beta_schedule == "scaled_linear":
            betas = betas_scaled_linear(n, self.beta_start, self.beta_end)
        elif self.beta_schedule == "cosine":
            betas = betas_cosine(n)
        elif self.beta_schedule == "learned":
            betas = betas_learned(n, self.log_snr)
        else:
            raise ValueError(
                f"unknown beta_schedule {self.beta_schedule!r}; choose from {list(BETA_SCHEDULES)}"
            )
        return rescale_zero_terminal_snr(betas) if self.zero_terminal_snr else betas

    def alphas_cumprod(self) -> torch.Tensor:
        return alphas_cumprod(self.betas())

    def sigmas(self) -> torch.Tensor:
        """(T,) float32 sigmas, ascending in t (index t = discrete timestep)."""
        return vp_sigmas(self.alphas_cumprod()).float()


# ---------------------------------------------------------------- continuous sigma schedules


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min!r}, {sigma_max!r}")


def sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """n sigmas evenly spaced in sigma^(1/rho), then 0 (Karras et al. 2022, eq. 5). (n+1,)"""
    _check_steps(n)
    _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho).float()


def sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n sigmas evenly spaced in log(sigma), then 0. (n+1,)"""
    _check_steps(n)
    _check_range(sigma_min, sigma_max)
    log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64)
    return _append_zero(log_sigmas.exp()).float()


# ---------------------------------------------------------------- discrete timesteps


def timesteps(
    steps: int, num_train_timesteps: int = 1000, spacing: str = "trailing"
) -> torch.Tensor:
    """`steps` descending timesteps out of T (float64), spaced as in Lin et al. 2023, Table 2.

    leading:  0, T//n, 2T//n, ...        (DDIM/SD default; never reaches T-1)
    trailing: T-1, T-1-T/n, ...          (starts at the last, noisiest timestep)
    linspace: linspace(0, T-1, n)        (fractional, interpolated)
    """
    _check_steps(steps)
    T = num_train_timesteps
    if steps > T:
        raise ValueError(f"steps must be <= num_train_timesteps={T}, got {steps}")
    if spacing == "leading":
        t = torch.arange(steps, dtype=torch.float64) * (T // steps)
    elif spacing == "trailing":
        t = torch.arange(T, 0, -T / steps, dtype=torch.float64).round().flip(0) - 1  # ascending
    elif spacing == "linspace":
        t = torch.linspace(0, T - 1, steps, dtype=torch.float64)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; choose from {list(SPACINGS)}")
    return t.flip(0)


def lcm_grid(num_train_timesteps: int = 1000, grid_steps: int = 50) -> list[int]:
    """The timesteps a latent consistency model is distilled on, descending: every k-th of T
    (k = T // grid_steps), ending k - 1 steps above 0 (Luo et al. 2023: skipping-step k)."""
    _check_steps(grid_steps)
    k = num_train_timesteps // grid_steps
    if k < 1:
        raise ValueError(f"grid_steps must be <= num_train_timesteps={num_train_timesteps}")
    return [(i + 1) * k - 1 for i in reversed(range(grid_steps))]


def lcm_timesteps(steps: int, num_train_timesteps: int = 1000, grid_steps: int = 50) -> list[int]:
    """`steps` descending timesteps for multistep consistency sampling: evenly spaced picks of
    the distillation grid from its noisiest end, so every step lands where the student was
    trained (4 of 1000 on a grid of 50: 999, 759, 499, 259)."""
    grid = lcm_grid(num_train_timesteps, grid_steps)
    _check_steps(steps)
    if steps > grid_steps:
        raise ValueError(f"steps must be <= the distillation grid's {grid_steps}, got {steps}")
    return [grid[int(i * grid_steps / steps)] for i in range(steps)]


def t_to_sigma(t: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Discrete-model sigma at (fractional) timestep t, interpolating log sigma."""
    log_sigmas = sigmas.double().log()
    t = t.double().clamp(0, len(sigmas) - 1)
    lo = t.floor().long().clamp(max=len(sigmas) - 2)
    w = t - lo
    return ((1 - w) * log_sigmas[lo] + w * log_sigmas[lo + 1]).exp().to(sigmas.dtype)


def sigma_to_t(sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Fractional timestep of sigma for a discrete model (inverse of t_to_sigma; clamped)."""
    log_sigmas = sigmas.log()
    log_sigma = sigma.to(sigmas.dtype).clamp(min=sigmas[0]).log()
    hi = torch.searchsorted(log_sigmas, log_sigma.contiguous()).clamp(1, len(sigmas) - 1)
    lo = hi - 1
    w = ((log_sigma - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])).clamp(0, 1)
    return lo + w


def discrete_sigmas(
    sigmas: torch.Tensor, steps: int, spacing: str = "trailing", at: list[float] | None = None
) -> torch.Tensor:
    """The model's own sigmas at `steps` spaced timesteps (or at the descending timesteps `at`,
    any subset: DDIM's tau), then 0. (steps+1,)"""
    if at is None:
        t = timesteps(steps, len(sigmas), spacing)
    else:
        t = torch.as_tensor(at, dtype=torch.float64)
        if t.ndim != 1 or not len(t) or (t.diff() >= 0).any() or t[-1] < 0 or t[0] >= len(sigmas):
            raise ValueError(f"timesteps must descend within [0, {len(sigmas) - 1}], got {at}")
    return _append_zero(t_to_sigma(t, sigmas))


# ---------------------------------------------------------------- forward process q(x_t | x0)


def q_sample(x0: torch.Tensor, sigma: torch.Tensor | float, noise: torch.Tensor) -> torch.Tensor:
    """Noise x0 to sigma in one step, in sigma-space: x = x0 + sigma * eps. sigma: float or (B,)."""
    sigma = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device)
    if (sigma < 0).any():
        raise ValueError(f"sigma must be >= 0, got {sigma.min().item()}")
    if sigma.ndim:  # (B,) -> (B, 1, ..., 1)
        sigma = sigma.reshape(-1, *[1] * (x0.ndim - 1))
    return x0 + sigma * noise


def q_sample_vp(
    x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    """DDPM forward process x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (Ho et al., eq 4)."""
    a = abar.to(x0)[t.long()].reshape(-1, *[1] * (x0.ndim - 1))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise
