"""The patch autoencoder: nothing to learn, every fact kept (shapes: one latent per grid cell)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.autoencoder import AutoencoderConfig, resize


@dataclass
class PatchConfig:
    """A fixed, parameter-free autoencoder: the image resized by `resample`, cut into
    patch x patch squares, each square's pixels one latent vector (C * patch^2 channels).

    With resample 0.75 and patch 16, a 64 px `shapes` scene becomes 3x3 latents of 768 values,
    one per cell of its grid, with nothing learnt that could lose a fact (a real scene through it
    is judged 1.00). A network over these latents is a pixel-space model with a patch stem, as
    JiT (Li & He 2025) predicts x0 from 16x16 pixel patches.
    """

    in_channels: int = 3
    patch: int = 16
    resample: float = 0.75

    def __post_init__(self) -> None:
        if self.patch < 1:
            raise ValueError(f"patch must be >= 1, got {self.patch}")
        if not 0 < self.resample <= 4:
            raise ValueError(f"resample must be in (0, 4], got {self.resample}")

    validate = __post_init__

    @property
    def latent_channels(self) -> int:
        return self.in_channels * self.patch**2

    @property
    def scale(self) -> Fraction:
        """Latent positions per image pixel: resample / patch."""
        return Fraction(self.resample).limit_denominator(64) / self.patch

    factor = AutoencoderConfig.factor
    latent_side = AutoencoderConfig.latent_side
    check_network_factor = AutoencoderConfig.check_network_factor


class AutoencoderPatch(nn.Module):
    """to_latent: resize + pixel_unshuffle; from_latent: pixel_shuffle + resize back. Exact
    inverses up to the resize (identity at resample 1)."""

    def __init__(self, config: PatchConfig):
        super().__init__()
        config.validate()
        self.config = config

    def to_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C * p^2, h, w), h = latent_side(H) (nothing is sampled)."""
        p = self.config.patch
        size = tuple(self.config.latent_side(side) * p for side in x.shape[-2:])
        return F.pixel_unshuffle(x if size == x.shape[-2:] else resize(x, size), p)

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C * p^2, h, w) -> (B, C, H, W), H = h / scale."""
        x = F.pixel_shuffle(z, self.config.patch)
        size = tuple(int(side / self.config.scale) for side in z.shape[-2:])
        return x if size == x.shape[-2:] else resize(x, size)
