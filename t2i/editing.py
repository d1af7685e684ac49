"""Editing through the one sampling loop: img2img (SDEdit), inpainting (RePaint), DDIM inversion.

A pipeline asks for a `SamplingPlan`: where the sampler starts, the sigmas it samples and the
denoiser it calls. Plain generation is `plain_plan` (pure noise, every sigma, the guided
denoiser); an edit is `edit_plan` (the init noised to the tail of the sigmas, the denoiser
wrapped for inpainting). The pipeline then runs whichever plan it got, with no branch of its own.

- img2img: `strength_sigmas` keeps the last strength * steps sigmas; sampling starts from
  encode(init) + sigma * noise at the first of them (Meng et al. 2022, SDEdit).
- inpainting: `InpaintDenoiser` is a denoiser wrapper, so every sampler works unchanged. Where the
  mask is 0 (keep), it shows the network the original noised to the current sigma, and returns
  the original as x0_hat there. A sampler's last step to sigma 0 returns x0_hat, so kept pixels end
  exactly at the original (in latent space: at its latent). A wrapper rather than a callback
  because samplers never hand their state back; a wrapper needs nothing from them.
  `sample_with_jumps` adds RePaint's resampling (Lugmayr et al. 2022, Alg. 1): after every
  `jump_length` steps it noises x back up and samples that stretch again, `resample - 1` times.
- inversion: `ddim_invert` runs Euler (DDIM with eta = 0) backwards over ascending sigmas
  (Song et al. 2021, Sec. 4.3; Mokady et al. 2023), image -> noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from t2i.denoisers import append_dims, sigma_batch
from t2i.guidance import DenoiserWrapper
from t2i.samplers import Generators, randn_like_per_item


def mask_to_latent(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 1, h, w): a latent pixel is repainted if any pixel of its share is."""
    return torch.nn.functional.adaptive_max_pool2d(mask, grid) if mask.shape[-2:] != grid else mask


def check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    return float(strength)


def strength_sigmas(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """The tail of a run's sigmas that img2img samples: int(strength * steps) steps, as diffusers.

    Strength 0 gives the single sigma [0] (nothing to sample); strength 1 gives all of them.
    """
    steps = len(sigmas) - 1
    keep = int(check_strength(strength) * steps)
    return sigmas[steps - keep :]


@dataclass
class SamplingPlan:
    """What a sampler runs: from `x` over `sigmas` with `model`; `resample` > 1 adds RePaint's
    resampling jumps. A plan with a single sigma has nothing to sample: x is the result."""

    x: torch.Tensor
    sigmas: torch.Tensor
    model: torch.nn.Module
    resample: int = 1

    def run(self, sampler, extra_args: dict, callback=None, generator: Generators = None):
        if len(self.sigmas) == 1:
            return self.x
        if self.resample == 1:
            return sampler(self.model, self.x, self.sigmas, extra_args, callback, generator)
        return sample_with_jumps(
            sampler, self.model, self.x, self.sigmas, extra_args, callback, generator, self.resample
        )


def plain_plan(model, sigmas: torch.Tensor, noise: torch.Tensor) -> SamplingPlan:
    """Text to image: pure noise at the first sigma, every step."""
    return SamplingPlan(noise * sigmas[0], sigmas, model)


def edit_plan(
    model,
    sigmas: torch.Tensor,
    noise: torch.Tensor,
    x_init: torch.Tensor,
    mask: torch.Tensor | None = None,
    strength: float = 1.0,
    resample: int = 1,
) -> SamplingPlan:
    """img2img from `x_init` (the init's latent, shaped as noise) over the last strength * steps
    sigmas; with `mask` (1 = repaint, on the latent grid) inpainting that keeps the rest."""
    if mask is not None:
        model = InpaintDenoiser(model, x_init, mask, noise)
    sigmas = strength_sigmas(sigmas, strength)
    # strength 1 starts from pure noise, exactly as plain generation does
    x = noise * sigmas[0] + (x_init if strength < 1 else 0)
    return SamplingPlan(x, sigmas, model, resample)


class InpaintDenoiser(DenoiserWrapper):
    """Keeps the known region (mask 0) by replacing it with the original noised to the current
    sigma before every call, and by returning the original there (RePaint, Lugmayr et al. 2022)."""

    def __init__(self, inner, x_known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor):
        super().__init__(inner)
        self.x_known = x_known  # (B, C, h, w) the original (latent)
        self.mask = mask  # (B or 1, 1, h, w), 1 = repaint
        self.noise = noise  # (B, C, h, w) unit noise: the same as the run's, so the known region
        # follows the trajectory a deterministic sampler takes there

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        sigma = sigma_batch(sigma, x)
        known = self.x_known + append_dims(sigma, x.ndim) * self.noise
        x = self.mask * x + (1 - self.mask) * known
        x0 = self.inner(x, sigma, **cond)
        return self.mask * x0 + (1 - self.mask) * self.x_known


@torch.no_grad()
def sample_with_jumps(
    sampler,
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    generator: Generators = None,
    resample: int = 1,
    jump_length: int = 5,
) -> torch.Tensor:
    """Run `sampler` in stretches of `jump_length` steps; repeat each stretch `resample` times,
    noising x back from its last sigma to its first in between (RePaint's resampling jumps)."""
    if isinstance(resample, bool) or not isinstance(resample, int) or not 1 <= resample <= 20:
        raise ValueError(f"resample must be an integer in [1, 20], got {resample!r}")
    if resample == 1:
        return sampler(model, x, sigmas, extra_args, callback, generator)
    for start in range(0, len(sigmas) - 1, jump_length):
        stretch = sigmas[start : start + jump_length + 1]
        for r in range(resample):
            if r > 0:  # back up: x at stretch[-1] -> x at stretch[0]
                up = (stretch[0] ** 2 - stretch[-1] ** 2).sqrt()
                x = x + up * randn_like_per_item(x, generator)
            x = sampler(model, x, stretch, extra_args, callback, generator)
    return x


@torch.no_grad()
def ddim_invert(model, x0: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None):
    """Image (latent) -> x at sigmas.max() by Euler backwards over the run's sigmas (ascending).

    `sigmas` are the descending sampling sigmas ending in 0; the 0 is replaced by the model's
    sigma_min (the network is not defined at sigma 0). Sampling the result back with DDIM(eta=0)
    / Euler over the same sigmas reconstructs x0 up to the discretisation error.
    """
    up = sigmas.flip(0).tolist()
    up[0] = min(float(model.sigma_min), up[1])
    return sample_euler_up(model, x0, up, extra_args or {})


def sample_euler_up(model, x: torch.Tensor, sigmas: list[float], extra_args: dict) -> torch.Tensor:
    """Euler on dx/dsigma = (x - D(x; sigma)) / sigma over ascending sigmas."""
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        denoised = model(x, x.new_full((x.shape[0],), sigma), **extra_args)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    return x
