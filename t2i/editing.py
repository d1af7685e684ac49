"""Editing through the one sampling loop: img2img (SDEdit), inpainting (RePaint), DDIM inversion.

A pipeline asks for a `SamplingPlan`: where the sampler starts, the sigmas it samples and the
denoiser it calls. Plain generation is `plain_plan` (pure noise, every sigma, the guided
denoiser); an edit is `edit_plan` (the init noised to the tail of the sigmas, the denoiser
wrapped for inpainting). The pipeline then runs whichever plan it got, with no branch of its own.

- img2img: `strength_sigmas` keeps the last strength * steps sigmas; sampling starts from
  encode(init) + sigma * noise at the first of them (Meng et al. 2022, SDEdit).
- inpainting: `InpaintDenoiser` is a denoiser wrapper, so every sampler works unchanged. Where the
  latent mask is 0 (keep), it shows the network the original noised to the current sigma, and
  returns the original as x0_hat there. A wrapper rather than a callback because samplers never
  hand their state back; a wrapper needs nothing from them. The mask is drawn in pixels and the
  latent grid may be coarse (shapes: 3x3 latents for 64 px), so the latent mask covers every
  latent the pixel mask touches (`mask_to_latent`), and after decoding `SamplingPlan.restore`
  puts the init's own pixels back wherever the pixel mask keeps them: outside the mask the output
  is the input, bit for bit, on every model, and inside it the repainted latents are drawn.
  `sample_with_jumps` adds RePaint's resampling (Lugmayr et al. 2022, Alg. 1): after every
  `jump_length` steps it noises x back up and samples that stretch again, `resample - 1` times,
  from the first sigma <= JUMPS_BELOW on (above it the known region is lost in the noise, and a
  trained denoiser, unlike the exact one, amplifies what an up-and-down pass leaves: on `shapes`
  the repainted region ran to black or white).
- inversion: `ddim_invert` runs the sampler's own Euler (DDIM with eta = 0) steps backwards over
  ascending sigmas (Song et al. 2021, Sec. 4.3; Mokady et al. 2023), image -> noise, each step
  solved by fixed-point iteration so that sampling forward lands on it (Pan et al. 2023, AIDI).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from t2i.denoisers import append_dims, sigma_batch
from t2i.guidance import DenoiserWrapper
from t2i.samplers import Generators, randn_like_per_item

JUMPS_BELOW = 10.0  # sigma: RePaint's jumps resample only from here down (see sample_with_jumps)


def mask_to_latent(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 1, h, w): a latent is repainted if any pixel of its share is (the
    shares overlap by a pixel where the grid does not divide H, so a pixel on a border frees the
    latents on both sides): the repainted latents cover at least the pixel mask."""
    grid = tuple(grid)
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
    resampling jumps. A plan with a single sigma has nothing to sample: x is the result.
    `keep` (inpainting): the init's pixels (1 or B, C, H, W) and the pixel mask (1 = repaint)
    that `restore` composites the decoded images with."""

    x: torch.Tensor
    sigmas: torch.Tensor
    model: torch.nn.Module
    resample: int = 1
    keep: tuple[torch.Tensor, torch.Tensor] | None = None

    def restore(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded images (B, C, H, W) -> the same with every pixel the mask keeps taken from the
        init exactly (the decoder of a latent model, or its resize, moves them otherwise); a
        softened mask (mask_blur) blends the two across its edge instead."""
        if self.keep is None:
            return images
        init, mask = self.keep
        if bool(((mask == 0) | (mask == 1)).all()):
            return torch.where(mask > 0, images, init.to(images.dtype))
        return torch.lerp(init.to(images.dtype), images, mask.to(images.dtype))

    def run(self, sampler, extra_args: dict, callback=None, generator: Generators = None):
        if len(self.sigmas) == 1:
            return self.x
        if self.resample == 1:
            return sampler(self.model, self.x, self.sigmas, extra_args, callback, generator)
        return sample_with_jumps(
            sampler, self.model, self.x, self.sigmas, extra_args, callback, generator, self.resample
        )


def soften(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A (B, 1, H, W) mask blurred by a Gaussian of standard deviation radius / 2 (A1111's mask
    blur), edges replicated; radius 0 returns it as it is."""
    if radius <= 0:
        return mask
    sigma = radius / 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(mask.dtype)
    x = mask
    for dim in (-1, -2):  # separable: along the rows, then the columns
        pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
        x = torch.nn.functional.pad(x, pad, mode="replicate")
        weight = kernel.view(1, 1, 1, -1) if dim == -1 else kernel.view(1, 1, -1, 1)
        x = torch.nn.functional.conv2d(x, weight)
    return x.clamp(0, 1)


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
    image: torch.Tensor | None = None,
    mask_blur: int = 0,
) -> SamplingPlan:
    """img2img from `x_init` (the init's latent, shaped as noise) over the last strength * steps
    sigmas; with `mask` (1 = repaint; in pixels or on the latent grid) inpainting that keeps the
    rest. `image`: the init's pixels, of the mask's size: the plan then restores them outside it,
    across an edge softened by `mask_blur` pixels (A1111's mask blur; sampling still uses the
    sharp mask)."""
    keep = None
    if mask is not None:
        model = InpaintDenoiser(model, x_init, mask_to_latent(mask, noise.shape[-2:]), noise)
        if image is not None:
            keep = (image, soften(mask, mask_blur))
    sigmas = strength_sigmas(sigmas, strength)
    # strength 1 starts from pure noise, exactly as plain generation does
    x = noise * sigmas[0] + (x_init if strength < 1 else 0)
    return SamplingPlan(x, sigmas, model, resample, keep)


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
    noising x back from its last sigma to its first in between (RePaint's resampling jumps), once
    the sigmas are down to JUMPS_BELOW (`jump_stretches`)."""
    for stretch, passes in jump_stretches(sigmas, resample, jump_length):
        for r in range(passes):
            if r > 0:  # back up: x at stretch[-1] -> x at stretch[0]
                up = (stretch[0] ** 2 - stretch[-1] ** 2).sqrt()
                x = x + up * randn_like_per_item(x, generator)
            x = sampler(model, x, stretch, extra_args, callback, generator)
    return x


def sampler_steps(sigmas: torch.Tensor, resample: int = 1) -> int:
    """Sampler steps (progress callbacks) a plan over `sigmas` runs, RePaint's repeats included."""
    return sum((len(s) - 1) * passes for s, passes in jump_stretches(sigmas, resample))


def jump_stretches(
    sigmas: torch.Tensor, resample: int, jump_length: int = 5, below: float = JUMPS_BELOW
) -> list[tuple[torch.Tensor, int]]:
    """(stretch of sigmas, passes) in the order sampled: the sigmas above `below` once, then
    stretches of `jump_length` steps `resample` times each.

    Why not from the top: a pass up and down again keeps the distribution only for an exact
    denoiser (with one, the modes of a Gaussian mixture keep their shares to 1%). A trained one is
    overconfident at high noise: `shapes`' x0 moves with a uniform shift of its input by 0.13x at
    sigma 157 and 1.3x at sigma 17, where an exact one moves by ~sigma_data^2 / sigma^2, so each
    pass amplifies what the last one left and repainted regions ran to black or white (the mean
    brightness of a half-repainted scene fell from 123 to 102 of 255 at resample 3). Up there the
    known region is lost in the noise anyway (below 5% of it at sigma 10), so nothing is lost.
    """
    if isinstance(resample, bool) or not isinstance(resample, int) or not 1 <= resample <= 20:
        raise ValueError(f"resample must be an integer in [1, 20], got {resample!r}")
    if resample == 1:
        return [(sigmas, 1)]
    first = next(i for i, s in enumerate(sigmas.tolist()) if s <= below or i == len(sigmas) - 1)
    out = [(sigmas[: first + 1], 1)] if first > 0 else []
    for start in range(first, len(sigmas) - 1, jump_length):
        out.append((sigmas[start : start + jump_length + 1], resample))
    return out


@torch.no_grad()
def ddim_invert(
    model,
    x0: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    refine: int = 2,
) -> torch.Tensor:
    """Image (latent) -> x at sigmas.max() that Euler / DDIM(eta=0) over the same `sigmas` (the
    descending sampling sigmas, ending in 0) maps back to x0: each step up inverts the sampler's
    step down (`euler_step_up`), 1 + refine evaluations of the denoiser a step.

    The first step, from the image at sigma 0 to sigma_1, reads the slope at sigma_1. (Read at
    the model's sigma_min ~ 0.01 it divides the network's error on the image by sigma_min: on
    `shapes` the inverted noise had std 2.9 and sampled back at 6.5 dB PSNR.)
    """
    up = sigmas.flip(0).tolist()
    x = x0
    for sigma, sigma_next in zip(up[:-1], up[1:]):
        x = euler_step_up(model, x, sigma, sigma_next, extra_args or {}, refine)
    return x


def euler_step_up(model, x, sigma: float, sigma_next: float, extra_args: dict, refine: int = 2):
    """x at sigma -> y at sigma_next > sigma whose Euler step down lands on x:
    y + (sigma - sigma_next) * (y - D(y; sigma_next)) / sigma_next = x.

    An Euler step up (Song et al. 2021, Sec. 4.3) is the first guess, off by the step's
    first-order error; `refine` fixed-point iterations y <- x + (sigma_next - sigma) * (y -
    D(y)) / sigma_next then solve the equation (Pan et al. 2023, AIDI): on a Gaussian's exact
    denoiser, 50 karras steps round-trip at 72 dB instead of 35.5; on the shipped models 2
    iterations reach the converged PSNR within 0.1 dB. From sigma 0 the guess is x itself and it
    is iterated once: y = x + (x - D(x; sigma_next)).
    """
    batch = (x.shape[0],)
    if sigma > 0:
        denoised = model(x, x.new_full(batch, sigma), **extra_args)
        y = x + (x - denoised) / sigma * (sigma_next - sigma)
    else:
        y, refine = x, 1
    for _ in range(refine):
        denoised = model(y, y.new_full(batch, sigma_next), **extra_args)
        y = x + (y - denoised) / sigma_next * (sigma_next - sigma)
    return y
