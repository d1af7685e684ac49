"""An autoregressive transformer over the codes of a VQ autoencoder, conditioned on text.

The image is its grid of codes read in raster order; the transformer predicts each code from the
ones before it (causal self-attention) and from the caption's token states (cross-attention), as
DALL-E (Ramesh et al. 2021) and Parti (Yu et al. 2022) do with a decoder over image tokens. It is
the comparison family to diffusion: it commits to one object at a time, where a denoiser refines
all of them at once.

Sampling (`sample_codes`) keeps each layer's keys and values (a KV cache), so drawing a code costs
one token's forward pass; classifier-free guidance mixes conditional and unconditional logits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.layers import GEGLU, Attention, attend, attention_mask


@dataclass
class TokenTransformerConfig:
    codebook_size: int = 512  # the VQ autoencoder's codes
    grid: int = 16  # codes per side (image_size / the autoencoder's factor)
    dim: int = 256
    layers: int = 6
    heads: int = 4
    ff_mult: int = 4
    context_dim: int = 256  # width of the text encoder's token states

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")
        for name in ("codebook_size", "grid", "layers", "context_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")

    @property
    def length(self) -> int:
        return self.grid * self.grid

    @classmethod
    def preset(cls, name: str, **overrides) -> TokenTransformerConfig:
        if name not in TOKEN_PRESETS:
            raise ValueError(
                f"unknown token transformer preset {name!r}; choose from {sorted(TOKEN_PRESETS)}"
            )
        return replace(TOKEN_PRESETS[name], **overrides)


TOKEN_PRESETS: dict[str, TokenTransformerConfig] = {
    "tiny": TokenTransformerConfig(
        codebook_size=64, grid=8, dim=32, layers=2, heads=2, context_dim=32
    ),
    "small": TokenTransformerConfig(dim=256, layers=6, heads=4),
    # shapes: 16x16 codes of 512, text from a 128-wide trained encoder; 4.4 M parameters
    "shapes": TokenTransformerConfig(dim=192, layers=6, heads=4, context_dim=128),
}


class TokenBlock(nn.Module):
    """Pre-LN: causal self-attention (with an optional KV cache), cross-attention, GEGLU."""

    def __init__(self, dim: int, heads: int, context_dim: int, ff_mult: int):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention(dim, heads, context_dim)
        self.norm3, self.ff = nn.LayerNorm(dim), GEGLU(dim, ff_mult)

    def forward(self, x, context, mask, keep, causal, cache: dict | None = None) -> torch.Tensor:
        x = x + self._self_attention(self.norm1(x), causal, cache)
        x = x + self.attn2(self.norm2(x), context, mask, keep)
        return x + self.ff(self.norm3(x))

    def _self_attention(self, x, causal, cache: dict | None) -> torch.Tensor:
        """Training: the whole sequence under the causal mask. Sampling: x is the newest token and
        attends to every cached one, so no mask is needed."""
        attn, (b, n, dim) = self.attn1, x.shape
        h = attn.heads
        q, k, v = attn.to_qkv(x).view(b, n, 3, h, dim // h).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        out = attend(q, k, v, causal if cache is None else None)
        return attn.to_out(out.transpose(1, 2).reshape(b, n, dim))


class TokenTransformer(nn.Module):
    """codes (B, L) + text states -> next-code logits (B, L, codebook_size); L = grid * grid."""

    def __init__(self, config: TokenTransformerConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.codebook_size + 1, c.dim)  # the last id starts every image
        self.pos = nn.Parameter(torch.randn(c.length, c.dim))  # the codes' scale (text_encoder.py)
        self.blocks = nn.ModuleList(
            TokenBlock(c.dim, c.heads, c.context_dim, c.ff_mult) for _ in range(c.layers)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.codebook_size)
        causal = torch.ones(c.length, c.length, dtype=torch.bool).tril()
        self.register_buffer("causal", causal[None, None], persistent=False)

    @property
    def start_id(self) -> int:
        return self.config.codebook_size

    def forward(
        self, codes: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher forcing: position i sees the start token and codes[:, :i]."""
        c = self.config
        if codes.shape[1:] != (c.length,):
            raise ValueError(f"codes of shape {tuple(codes.shape)}; expected (B, {c.length})")
        start = torch.full_like(codes[:, :1], self.start_id)
        x = self.embed(torch.cat([start, codes[:, :-1]], 1)) + self.pos
        mask, keep = attention_mask(context_mask)
        for block in self.blocks:
            x = block(x, context, mask, keep, self.causal)
        return self.head(self.norm(x))

    def step(self, token, position: int, context, mask, keep, caches: list[dict]) -> torch.Tensor:
        """One token (B,) at `position` -> logits (B, codebook_size) for the next position."""
        x = self.embed(token)[:, None] + self.pos[position]
        for block, cache in zip(self.blocks, caches):
            x = block(x, context, mask, keep, None, cache)
        return self.head(self.norm(x))[:, 0]


def check_sampling(temperature: float, top_k: int) -> None:
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise ValueError(f"temperature must be a number >= 0 (0: greedy), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0: every code), got {top_k!r}")


def pick(logits: torch.Tensor, temperature: float, top_k: int, generators) -> torch.Tensor:
    """A code per row from logits (B, V): top-k filtered, tempered, drawn with row i's generator
    (so image i of a batch equals drawing it alone with its own seed); temperature 0 is argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])


@torch.no_grad()
def sample_codes(
    model: TokenTransformer,
    context: torch.Tensor,
    context_mask: torch.Tensor | None,
    uncond: tuple[torch.Tensor, torch.Tensor | None] | None,
    guidance: float,
    generators: list[torch.Generator],
    temperature: float = 1.0,
    top_k: int = 0,
    callback=None,
) -> torch.Tensor:
    """Codes (B, grid, grid) drawn in raster order; `uncond` = the empty caption's (context, mask)
    for classifier-free guidance: logits = u + guidance * (c - u) (guidance 1 skips it)."""
    check_sampling(temperature, top_k)
    b, c = context.shape[0], model.config
    if uncond is not None and guidance != 1.0:
        u_ctx, u_mask = uncond
        u_ctx = u_ctx.expand(b, *u_ctx.shape[1:])
        u_mask = None if u_mask is None else u_mask.expand(b, *u_mask.shape[1:])
        context, context_mask = _pad_cat(context, context_mask, u_ctx, u_mask)
    mask, keep = attention_mask(context_mask)
    caches: list[dict] = [{} for _ in model.blocks]
    token = torch.full((context.shape[0],), model.start_id, dtype=torch.long)
    codes = []
    for i in range(c.length):
        logits = model.step(token, i, context, mask, keep, caches).float()  # mixed in fp32
        if logits.shape[0] > b:
            cond, un = logits[:b], logits[b:]
            logits = un + guidance * (cond - un)
        code = pick(logits, temperature, top_k, generators)
        codes.append(code)
        token = code.repeat(context.shape[0] // b)
        if callback is not None:
            callback(i)
    return torch.stack(codes, 1).view(b, c.grid, c.grid)


def _pad_cat(a, a_mask, b, b_mask):
    """Stack two (B, L, D) contexts of different lengths along the batch, padding with masked
    tokens; masks None mean all tokens are real."""
    la, lb = a.shape[1], b.shape[1]
    length = max(la, lb)

    def pad(x, m, n):
        m = torch.ones(x.shape[:2], dtype=torch.bool) if m is None else m
        return F.pad(x, (0, 0, 0, length - n)), F.pad(m, (0, length - n), value=False)

    (a, a_mask), (b, b_mask) = pad(a, a_mask, la), pad(b, b_mask, lb)
    return torch.cat([a, b]), torch.cat([a_mask, b_mask])
