"""unCLIP's networks (Ramesh et al. 2022): a prior from text to a CLIP image embedding, and what
lets a UNet read that embedding.

The CLIP space is the one of a CLIP trained here for generation (never the CLIP evaluation
judges with). An embedding enters every network as `embedding_input(e)`: the unit vector times
sqrt(E), so its entries have about unit variance, as images in [-1, 1] roughly do.

    DiffusionPrior     net(x, t, context, context_mask, pooled) -> x0 of the noised embedding x:
                       a transformer over the CLIP text embedding, the timestep, the noised image
                       embedding, a query token and the text states (DALL-E 2's prior, sec. 2.1,
                       predicting the clean embedding); a denoiser from t2i.denoisers wraps it
    EmbeddingRegressor pooled text -> image embedding in one pass: the baseline a prior must beat
    EmbeddingTokens    image embedding -> extra context tokens for the decoder UNet's
                       cross-attention (with the embedding also added to its time embedding
                       through UNetConfig.pooled_dim); zero at initialisation, so a text-to-image
                       UNet it is added to starts out computing what it did
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.layers import TransformerBlock, attention_mask, timestep_embedding


def embedding_input(embeds: torch.Tensor) -> torch.Tensor:
    """(B, E) CLIP embeddings -> unit vectors times sqrt(E) (entries of about unit variance)."""
    return F.normalize(embeds.float(), dim=-1) * math.sqrt(embeds.shape[-1])


@dataclass
class PriorConfig:
    embed_dim: int = 128  # the CLIP space
    text_dim: int = 384  # width of the text states it reads
    dim: int = 256
    layers: int = 4
    heads: int = 4
    max_length: int = 77  # text tokens it reads (a longer prompt is refused by the family)
    ff_mult: int = 2

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a multiple of heads {self.heads}")


class DiffusionPrior(nn.Module):
    """A transformer over [CLIP text embedding, timestep, noised embedding, query, text
    states...]; the query's final state predicts the clean image embedding (scaled as
    `embedding_input`). Padding tokens of the text are masked out of every attention."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = c = config
        self.text_in = nn.Linear(c.text_dim, c.dim)
        self.pooled_in = nn.Linear(c.embed_dim, c.dim)
        self.time_in = nn.Sequential(nn.Linear(c.dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.x_in = nn.Linear(c.embed_dim, c.dim)
        self.query = nn.Parameter(torch.zeros(c.dim))
        self.positions = nn.Parameter(torch.zeros(c.max_length + 4, c.dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.heads, None, c.ff_mult) for _ in range(c.layers)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.out = nn.Linear(c.dim, c.embed_dim)
        nn.init.normal_(self.positions, std=0.02)
        nn.init.normal_(self.query, std=0.02)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, E) noised embedding (scaled by the denoiser), t (B,) its c_noise, context
        (B, L, text_dim), context_mask (B, L), pooled (B, E) the CLIP text embedding as
        `embedding_input` (zeros: dropped) -> (B, E)."""
        c = self.config
        b, length = context.shape[:2]
        if length > c.max_length:
            raise ValueError(f"{length} text tokens; this prior reads at most {c.max_length}")
        if pooled is None:
            pooled = x.new_zeros(b, c.embed_dim)
        temb = self.time_in(timestep_embedding(t, c.dim).to(x.dtype))
        extra = [self.pooled_in(pooled), temb, self.x_in(x), self.query.expand(b, -1)]
        # the four fixed tokens first: padding the text never moves their positions
        h = torch.cat([torch.stack(extra, 1), self.text_in(context)], 1)
        h = h + self.positions[: length + 4]
        if context_mask is None:
            context_mask = torch.ones(b, length, dtype=torch.bool, device=x.device)
        keys = torch.cat([context_mask.new_ones(b, 4), context_mask], 1)
        mask, _ = attention_mask(keys)
        for block in self.blocks:
            h = block(h, self_mask=mask)
        return self.out(self.norm(h[:, 3]))


@dataclass
class RegressorConfig:
    embed_dim: int = 128
    text_dim: int = 384  # the pooled text embedding it reads
    hidden: int = 512
    depth: int = 2  # hidden layers


class EmbeddingRegressor(nn.Module):
    """pooled text (B, text_dim) -> image embedding (B, E), unnormalised: an MLP trained on the
    cosine to the true embedding. The simplest prior: one answer per prompt, no variety."""

    def __init__(self, config: RegressorConfig):
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = []
        width = c.text_dim
        for _ in range(c.depth):
            layers += [nn.Linear(width, c.hidden), nn.GELU()]
            width = c.hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, c.embed_dim))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)


@dataclass
class EmbeddingTokensConfig:
    embed_dim: int = 128
    context_dim: int = 384  # the decoder UNet's context width
    tokens: int = 4


class EmbeddingTokens(nn.Module):
    """(B, E) image embedding (as `embedding_input`) -> (B, tokens, context_dim) context tokens.
    Starts at zero: the tokens carry nothing until training moves them."""

    def __init__(self, config: EmbeddingTokensConfig):
        super().__init__()
        self.config = c = config
        self.proj = nn.Linear(c.embed_dim, c.tokens * c.context_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        c = self.config
        return self.proj(embeds).view(-1, c.tokens, c.context_dim)


def decoder_condition(tokens: EmbeddingTokens, text: dict, embeds: torch.Tensor | None) -> dict:
    """The decoder UNet's condition: the text states with the embedding's tokens appended, and
    the embedding as `pooled` (added to the time embedding). embeds None: the null embedding
    (zeros), what classifier-free guidance drops to."""
    context, mask = text["context"], text["context_mask"]
    b = context.shape[0]
    if embeds is None:
        embeds = context.new_zeros(b, tokens.config.embed_dim)
    if embeds.shape[0] == 1 and b > 1:
        embeds = embeds.expand(b, -1)
    extra = tokens(embeds).to(context.dtype)
    return {
        "context": torch.cat([context, extra], 1),
        "context_mask": torch.cat([mask, mask.new_ones(b, extra.shape[1])], 1),
        "pooled": embeds,
    }
