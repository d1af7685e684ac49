"""Shared building blocks: timestep embedding, residual blocks, attention, resampling.

Written for CPU speed: fused projections (one matmul for q,k,v; one for k,v of the context),
PyTorch's `scaled_dot_product_attention`, and one token layout change per transformer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) float timesteps -> (B, dim) [cos | sin] (Vaswani 2017)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def position_features(height: int, width: int, n: int) -> torch.Tensor:
    """(1, 4n, H, W): cos and sin of pi k u, k = 1..n, u each row's and column's centre in [0, 1].

    Where a feature sits in the image, in units of the image: the same at every resolution.
    """
    k = torch.arange(1, n + 1, dtype=torch.float32) * math.pi

    def axis(size: int) -> torch.Tensor:  # (2n, size)
        u = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        return torch.cat([torch.cos(k[:, None] * u), torch.sin(k[:, None] * u)])

    rows = axis(height)[:, :, None].expand(-1, height, width)
    cols = axis(width)[:, None, :].expand(-1, height, width)
    return torch.cat([rows, cols])[None]


def check_groups(channels: int, groups: int, where: str) -> None:
    """GroupNorm needs channels divisible by groups: a config mistake, so ValueError."""
    if channels % groups:
        raise ValueError(f"{where}: {channels} channels are not divisible by groups={groups}")


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, a time embedding added in between (Ho et al. 2020, DDPM)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.out_ch = out_ch
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=1e-6)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_ch, H, W), emb (B, out_ch) the projected time embedding -> (B, out_ch, H, W).

        The owner projects the time embedding for all its blocks in one matmul (see UNet)."""
        h = self.conv1(F.silu(self.norm1(x)))
        if emb is not None:
            h = h + emb[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


def attention_mask(mask: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(B, L) bool key mask (True = real token) -> SDPA mask (B, 1, 1, L) and a row keep factor.

    An all-True mask becomes None (SDPA's fast path). A row with no real token attends to nothing:
    its attention output is zero, returned as keep (B, 1, 1) = 0 for that row (None if no such row).
    """
    if mask is None or bool(mask.all()):
        return None, None
    has_token = mask.any(dim=1)
    keep = None
    if not bool(has_token.all()):
        mask = mask | ~has_token[:, None]  # any finite softmax; the output is zeroed by keep
        keep = has_token.float()[:, None, None]
    return mask[:, None, None, :], keep


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None):
    """softmax(q k^T / sqrt(d)) v over (B, h, N, d) x (B, h, L, d); mask (B, 1, 1, L) bool.

    fp32: PyTorch's fused SDPA. bf16/fp16: written out, because on CPU the fused kernel's backward
    is 5-7x slower than these three ops for short sequences (benchmarks/bench_unet.py). PyTorch's
    CPU softmax accumulates low-precision inputs in fp32.
    """
    if q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


class Attention(nn.Module):
    """Multi-head attention with fused projections: self (one qkv matmul) or cross (q + one kv)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, bias: bool = False):
        super().__init__()
        self.heads = heads
        self.cross = context_dim is not None
        if self.cross:
            self.to_q = nn.Linear(dim, dim, bias=bias)
            self.to_kv = nn.Linear(context_dim, 2 * dim, bias=bias)
        else:
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.to_out = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, N, dim), context (B, L, context_dim), mask (B, 1, 1, L) from `attention_mask`."""
        b, n, dim = x.shape
        h = self.heads
        if self.cross:
            q = self.to_q(x).view(b, n, h, dim // h).transpose(1, 2)
            k, v = self.to_kv(context).view(b, -1, 2, h, dim // h).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = self.to_qkv(x).view(b, n, 3, h, dim // h).permute(2, 0, 3, 1, 4)
        out = attend(q, k, v, mask)  # (B, h, N, dim/h)
        out = self.to_out(out.transpose(1, 2).reshape(b, n, dim))
        return out if keep is None else out * keep


class GEGLU(nn.Module):
    """Feed-forward with a gated GELU: one matmul to 2*inner, gate, one back (Shazeer 2020)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.proj_out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(a * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Pre-LN block: self-attention, cross-attention over text tokens (if context_dim), GEGLU."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, ff_mult: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim) if context_dim else None
        self.attn2 = Attention(dim, heads, context_dim) if context_dim else None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GEGLU(dim, ff_mult)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        self_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, N, dim); mask/keep for the context keys, self_mask for x's own keys (text)."""
        x = x + self.attn1(self.norm1(x), mask=self_mask)
        if self.attn2 is not None and context is not None:
            x = x + self.attn2(self.norm2(x), context, mask, keep)
        return x + self.ff(self.norm3(x))

    @torch.no_grad()
    def start_as_identity(self) -> TransformerBlock:
        """Zero every residual branch's last layer, so the block computes x + 0 + 0 + 0: a block
        added to a trained network leaves it as it was. The branches' inputs are not zero, so the
        first step already moves them (as ControlNet's zero convolutions)."""
        outputs = [self.attn1.to_out, self.ff.proj_out]
        if self.attn2 is not None:
            outputs.append(self.attn2.to_out)
        for layer in outputs:
            layer.weight.zero_()
            layer.bias.zero_()
        return self


class SpatialTransformer(nn.Module):
    """GroupNorm, linear projection to tokens, transformer blocks, back, residual (Rombach 2022)."""

    def __init__(
        self, ch: int, heads: int, context_dim: int | None, groups: int = 32, depth: int = 1
    ):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = nn.Linear(ch, ch)
        self.blocks = nn.ModuleList(TransformerBlock(ch, heads, context_dim) for _ in range(depth))
        self.proj_out = nn.Linear(ch, ch)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W); tokens are the H*W positions."""
        b, c, hgt, wid = x.shape
        h = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))  # (B, HW, C)
        for block in self.blocks:
            h = block(h, context, mask, keep)
        h = self.proj_out(h).transpose(1, 2).reshape(b, c, hgt, wid)
        return x + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, ch: int, out_ch: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(ch, out_ch or ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution (avoids checkerboard artefacts)."""

    def __init__(self, ch: int, out_ch: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(ch, out_ch or ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
