"""Networks that read noisy samples: a noise-aware classifier (Dhariwal & Nichol 2021) and the
image tower of a noisy CLIP (GLIDE, Nichol et al. 2022), in one shape.

Both see x_t = x_0 + sigma * eps in the space a diffusion model samples in (its pixels, or its
autoencoder's latents) and sigma itself: the input is scaled to unit variance by
1 / sqrt(sigma^2 + sigma_data^2) (as EDM's c_in) and log sigma enters every residual block as an
embedding, so one network serves every noise level of the sampler.

    net = NoisyGuide(NoisyGuideConfig(task="fashion", in_channels=1, outputs=10))
    logits, cells = net(x_t, sigma)         # (B, outputs), (B, cell_outputs, h, w) or None

`task` names what the outputs mean (t2i/guides/tasks.py): "fashion" (class logits), "shapes"
(background logits pooled, per-cell object logits at the network's last resolution), "clip"
(an image embedding; `text_proj` and `logit_scale` are the text side over the frozen text
encoder's states).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.layers import Downsample, ResBlock, check_groups, timestep_embedding

TASKS = ("fashion", "shapes", "clip")


@dataclass
class NoisyGuideConfig:
    task: str = "fashion"
    in_channels: int = 1
    image_size: int = 32  # side of what it reads (a latent's side for a latent model)
    channels: tuple[int, ...] = (32, 64, 128)  # levels, stride 2 between them
    depth: int = 1  # residual blocks per level
    groups: int = 16
    embed_dim: int = 128  # sigma embedding width
    outputs: int = 10  # the pooled head: classes, or the CLIP embedding width
    cell_outputs: int = 0  # a per-position head at the last level (0: none)
    text_width: int = 0  # clip: width of the text encoder's states (0: no text side)
    sigma_data: float = 0.5  # std of the clean data, measured by the recipe
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    name: str = ""  # what requests call it (the run's --out folder name); "" = its folder's
    base: str = ""  # the model it was trained for (its folder's name)
    base_hash: str = ""  # that model's weights (Generator.model_hash): what it was trained on

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r}; choose from {list(TASKS)}")
        for ch in self.channels:
            check_groups(ch, self.groups, "NoisyGuideConfig.channels")
        if (self.task == "clip") != (self.text_width > 0):
            raise ValueError("text_width is the text side of a clip guide: > 0 for clip only")
        if self.task == "shapes" and self.cell_outputs < 1:
            raise ValueError("a shapes guide reads objects per cell: cell_outputs >= 1")
        if self.sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0, got {self.sigma_data}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def cells_side(self) -> int:
        """Side of the per-cell head's grid."""
        return -(-self.image_size // self.factor)


def pool_text(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) text states, (B, L) mask -> (B, D): the mean of the states the mask keeps."""
    keep = mask.to(states.dtype)[..., None]
    return (states * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class NoisyGuide(nn.Module):
    """Residual stages conditioned on log sigma; a pooled head and an optional per-cell head."""

    def __init__(self, config: NoisyGuideConfig):
        super().__init__()
        self.config = c = config
        self.sigma_embed = nn.Sequential(
            nn.Linear(c.embed_dim, c.embed_dim), nn.SiLU(), nn.Linear(c.embed_dim, c.embed_dim)
        )
        self.stem = nn.Conv2d(c.in_channels, c.channels[0], 3, padding=1)
        blocks, downs, projections, prev = [], [], [], c.channels[0]
        for level, ch in enumerate(c.channels):
            for _ in range(c.depth):
                blocks.append(ResBlock(prev, ch, c.groups))
                projections.append(nn.Linear(c.embed_dim, ch))
                last = len(blocks) == c.depth * (level + 1)
                down = last and level < len(c.channels) - 1
                downs.append(Downsample(ch) if down else nn.Identity())
                prev = ch
        self.blocks, self.downs = nn.ModuleList(blocks), nn.ModuleList(downs)
        self.projections = nn.ModuleList(projections)
        self.norm = nn.GroupNorm(c.groups, prev)
        self.head = nn.Linear(prev, c.outputs)
        self.cell_head = nn.Conv2d(prev, c.cell_outputs, 1) if c.cell_outputs else None
        if c.text_width:
            self.text_proj = nn.Linear(c.text_width, c.outputs)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.init_temperature)))

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, C, H, W) noisy, sigma (B,) -> pooled (B, outputs), cells (B, K, h, w) or None."""
        sigma = sigma.to(x.dtype).reshape(-1)
        c_in = (sigma**2 + self.config.sigma_data**2).rsqrt()[:, None, None, None]
        # log sigma spans about -5..5 for a 1,000-step VP schedule: x100 spreads it over the
        # sinusoid's frequencies as the UNet's timestep does over 0..1000
        emb = timestep_embedding(100 * sigma.log(), self.config.embed_dim).to(x.dtype)
        emb = self.sigma_embed(emb)
        emb = F.silu(emb)
        h = self.stem(x * c_in)
        for block, down, proj in zip(self.blocks, self.downs, self.projections):
            h = down(block(h, proj(emb)))
        h = F.silu(self.norm(h))
        cells = self.cell_head(h) if self.cell_head is not None else None
        return self.head(h.mean(dim=(2, 3))), cells

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped as CLIP's (clip guides only)."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def encode_text(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) text states, (B, L) mask -> (B, E) unit vectors: the mean of the states the
        mask keeps, projected (any text encoder's states, a long prompt's chunks too)."""
        return self.project_text(pool_text(states, mask))

    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled text states -> (B, E) unit vectors."""
        return F.normalize(self.text_proj(pooled.to(self.text_proj.weight.dtype)), dim=-1)

    def encode_image(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) noisy -> (B, E) unit vectors (clip guides)."""
        return F.normalize(self(x, sigma)[0], dim=-1)
