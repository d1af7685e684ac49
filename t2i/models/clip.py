"""CLIP trained here: an image encoder and a text tower trained contrastively (Radford et al. 2021).

The text tower is either a `TextTransformer` owned by the model (`config.text` set) or the pooled
output of any other encoder (e.g. the frozen `PretrainedTextEncoder`, `config.text_dim` set); both
reach the shared space through a linear projection. Used for evaluation (CLIP score,
R-precision, FID features), CLIP guidance and the unCLIP prior.

    clip = CLIP(CLIPConfig.preset("small", text=TextTransformerConfig.preset("small", vocab=v)))
    loss = clip.loss(images, clip.encode_prompts(captions))        # InfoNCE, learnable temperature
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.layers import Downsample, ResBlock, check_groups
from t2i.models.text_encoder import TextEmbedding, TextTransformer, TextTransformerConfig


@dataclass
class CLIPConfig:
    image_size: int = 64
    image_channels: int = 3
    channels: tuple[int, ...] = (32, 64, 128, 256)  # image encoder levels (stride 2 between)
    groups: int = 16
    embed_dim: int = 256  # shared image-text space
    text: TextTransformerConfig | None = None  # a text tower owned by CLIP; None: external
    text_dim: int = 384  # width of the external pooled embedding (used when text is None)
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0  # clamp of exp(logit_scale), as CLIP

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if isinstance(self.text, dict):
            self.text = TextTransformerConfig(**self.text)
        for ch in self.channels:
            check_groups(ch, self.groups, "CLIPConfig.channels")

    @classmethod
    def preset(cls, name: str, **overrides) -> CLIPConfig:
        if name not in CLIP_PRESETS:
            raise ValueError(f"unknown CLIP preset {name!r}; choose from {sorted(CLIP_PRESETS)}")
        return replace(CLIP_PRESETS[name], **overrides)


CLIP_PRESETS: dict[str, CLIPConfig] = {
    "tiny": CLIPConfig(image_size=16, channels=(16, 32), groups=8, embed_dim=32, text_dim=32),
    "small": CLIPConfig(),
    "base": CLIPConfig(channels=(64, 128, 256, 512), groups=32, embed_dim=512),
}


class ImageEncoder(nn.Module):
    """Residual conv stages with stride-2 downsampling, global mean pool, linear head."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(c.image_channels, c.channels[0], 3, padding=1)]
        prev = c.channels[0]
        for level, ch in enumerate(c.channels):
            layers.append(ResBlock(prev, ch, c.groups))
            prev = ch
            if level < len(c.channels) - 1:
                layers.append(Downsample(ch))
        layers += [nn.GroupNorm(c.groups, prev), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(prev, c.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] -> (B, embed_dim), not normalised."""
        return self.head(self.net(x).mean(dim=(2, 3)))


class CLIP(nn.Module):
    """Image encoder + text projection (+ optional text tower) with a learnable temperature."""

    save_weights = True

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = c = config
        self.image_encoder = ImageEncoder(c)
        self.text_encoder = TextTransformer(c.text) if c.text is not None else None
        text_dim = c.text.dim if c.text is not None else c.text_dim
        self.text_proj = nn.Linear(text_dim, c.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.init_temperature)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, E) unit vectors."""
        return F.normalize(self.image_encoder(images), dim=-1)

    def encode_text(self, text: TextEmbedding) -> torch.Tensor:
        """TextEmbedding (pooled (B, D)) -> (B, E) unit vectors."""
        return F.normalize(self.text_proj(text.pooled), dim=-1)

    def encode_prompts(self, prompts: list[str]) -> TextEmbedding:
        """Run the owned text tower (only when config.text is set)."""
        if self.text_encoder is None:
            raise ValueError(
                "this CLIP has no text tower (config.text is None): encode the "
                "prompts with your text encoder and pass its TextEmbedding"
            )
        return self.text_encoder.encode(prompts)

    def logits(self, images: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """(B_img, B_txt) scaled cosine similarities."""
        scale = self.logit_scale.exp().clamp(max=self.config.max_logit_scale)
        return scale * self.encode_image(images) @ self.encode_text(text).t()

    def loss(self, images: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """Symmetric InfoNCE over the batch: image i matches text i (CLIP, eq. in fig. 3)."""
        logits = self.logits(images, text)
        target = torch.arange(len(logits), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))

    def score(self, images: torch.Tensor, text: TextEmbedding) -> torch.Tensor:
        """Per-pair cosine similarity (B,) of image i and text i (CLIP score without the 100x)."""
        return (self.encode_image(images) * self.encode_text(text)).sum(-1)
