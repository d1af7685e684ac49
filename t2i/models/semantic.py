"""The semantic compressor of a Würstchen-style model (Pernias et al. 2023): an autoencoder's
latents -> a small grid of many channels, the space the text-conditional stage C draws in.

    SemanticEncoder  (B, 4, 16, 16) emoji latents -> (B, 16, 4, 4) in (-1, 1)

It is trained here jointly with stage B (t2i/training/diffusion_wuerstchen_b.py): stage B reads
the grid as extra input channels and learns to draw the latents back from it, so the grid keeps
what stage B cannot guess (layout, colours, the kind of thing) and leaves it the detail. The grid
goes through tanh, so it is bounded like pixels and stage C is an ordinary pixel-space diffusion
model over 16-channel 4x4 "images"; stage B is trained on grids with Gaussian noise added, which
bounds how much the grid can carry in fine differences of value that stage C could not draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.layers import Downsample, ResBlock, check_groups


@dataclass
class SemanticConfig:
    in_channels: int = 4  # the autoencoder's latent channels
    out_channels: int = 16  # channels of the semantic grid
    channels: tuple[int, ...] = (64, 128, 256)  # per level; each level after the first halves
    groups: int = 32

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive widths, got {self.channels}")
        for width in self.channels:
            check_groups(width, self.groups, "semantic encoder")
        if not 1 <= self.in_channels <= 64 or not 1 <= self.out_channels <= 256:
            raise ValueError(
                f"in_channels {self.in_channels} must be in [1, 64], out_channels "
                f"{self.out_channels} in [1, 256]"
            )

    @property
    def factor(self) -> int:
        """Latent side over grid side."""
        return 2 ** (len(self.channels) - 1)

    def grid_side(self, latent_side: int) -> int:
        if latent_side % self.factor:
            raise ValueError(
                f"the semantic encoder halves the latent {int(math.log2(self.factor))} times: "
                f"a latent side of {latent_side} is not a multiple of {self.factor}"
            )
        return latent_side // self.factor


class SemanticEncoder(nn.Module):
    """A residual conv stack, halving the grid between levels, then tanh."""

    def __init__(self, config: SemanticConfig):
        super().__init__()
        self.config = c = config
        self.stem = nn.Conv2d(c.in_channels, c.channels[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for level, width in enumerate(c.channels):
            if level:
                blocks.append(Downsample(c.channels[level - 1], width))
            blocks.append(ResBlock(width, width, c.groups))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.GroupNorm(c.groups, c.channels[-1], eps=1e-6)
        self.out = nn.Conv2d(c.channels[-1], c.out_channels, 1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) latents -> (B, out_channels, H/f, W/f) in (-1, 1)."""
        if latent.ndim != 4 or latent.shape[1] != self.config.in_channels:
            raise ValueError(
                f"the semantic encoder reads (B, {self.config.in_channels}, H, W) latents, got "
                f"{tuple(latent.shape)}"
            )
        for side in latent.shape[-2:]:
            self.config.grid_side(side)
        h = self.stem(latent)
        for block in self.blocks:
            h = block(h)
        return torch.tanh(self.out(F.silu(self.norm(h))))
