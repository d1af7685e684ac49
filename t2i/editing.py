"""Editing through the one sampling loop: img2img (SDEdit), inpainting (RePaint), DDIM inversion.

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

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from t2i.denoisers import append_dims, sigma_batch
from t2i.guidance import _Wrapper
from t2i.samplers import Generators, randn_like_per_item


def _open(path: str | Path | Image.Image, what: str) -> Image.Image:
    if isinstance(path, Image.Image):
        return path
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {what} {str(path)!r} as an image: {err}") from err


def load_image(
    path: str | Path | Image.Image, size: tuple[int, int] | None = None, channels: int = 3
) -> torch.Tensor:
    """An image file -> (1, C, H, W) in [-1, 1]; `size` (W, H) must match when given."""
    img = _open(path, "init image")
    if size is not None and img.size != tuple(size):
        raise ValueError(
            f"init image is {img.size[0]}x{img.size[1]}, the request is {size[0]}x{size[1]}; "
            "resize the image or pass its size"
        )
    img = img.convert("L" if channels == 1 else "RGB")
    a = np.asarray(img, dtype=np.float32).reshape(img.size[1], img.size[0], -1)
    return torch.from_numpy(a.transpose(2, 0, 1) / 127.5 - 1.0)[None]


def load_mask(path: str | Path | Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A mask file -> (1, 1, H, W) float in {0, 1}: 1 (white) = repaint, 0 (black) = keep."""
    img = _open(path, "mask")
    if img.size != tuple(size):
        raise ValueError(
            f"mask is {img.size[0]}x{img.size[1]} but the image is {size[0]}x{size[1]}; "
            "the mask must have the image's size"
        )
    a = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy((a >= 0.5).astype(np.float32))[None, None]


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


class InpaintDenoiser(_Wrapper):
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


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)
