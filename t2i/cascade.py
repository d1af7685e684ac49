"""Cascaded generation (Ho et al. 2021, "Cascaded Diffusion Models"): a base model draws the image
small, an upscaler draws it again at full size, conditioned on the small one.

The upscaler is an ordinary text-conditioned denoiser whose UNet has `cond_channels` extra input
channels: the small image, resized to the upscaler's size (`x_cond`). It is trained on the data's
own images shrunk to `low_res`, so it learns to keep what the small image shows (layout, colours)
and to draw what it cannot (edges, shapes). Why it helps on `shapes`: the placement the 64x64 model
fails to learn from the caption is learned at once when the layout reaches the UNet as an input
(BENCHMARKS.md, "Session 7: the background as an input ..."); in a cascade the base model has the
easier part of that job, at 1/64 of the pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shrink(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w) by box averaging (area), as the data's own renderers do."""
    return F.interpolate(images, size=size, mode="area")


def enlarge(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The small image at the upscaler's size (bilinear): its `x_cond`."""
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


def low_res_condition(
    low: torch.Tensor, size: tuple[int, int], noise: torch.Tensor | None = None, scale=None
) -> torch.Tensor:
    """The upscaler's training input from the images' small versions `low` (B, C, h, w): optional
    Gaussian noise (`noise` of the small shape times per-image `scale` (B,): conditioning
    augmentation, so the upscaler learns not to copy a base model's errors), enlarged to `size`
    (the upscaler's pixels, or its latent grid for a latent upscaler)."""
    if noise is not None:
        low = low + noise * scale.view(-1, 1, 1, 1)
    return enlarge(low, size)
