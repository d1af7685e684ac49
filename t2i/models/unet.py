"""UNet for noise prediction with text cross-attention (Ronneberger 2015; Ho 2020; Rombach 2022).

`UNet(config)(x, t, context, context_mask, pooled, x_cond)` follows the network contract in
ARCHITECTURE.md. The layout matches Stable Diffusion's UNet (residual blocks + spatial transformers
per level, a middle block, skip connections), so it can be benchmarked against diffusers'
`UNet2DConditionModel` at the same configuration (benchmarks/bench_unet.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.control_residuals import Residuals
from t2i.models.layers import (
    Downsample,
    ResBlock,
    SpatialTransformer,
    TransformerBlock,
    Upsample,
    attention_mask,
    check_groups,
    position_features,
    timestep_embedding,
)


@dataclass
class UNetConfig:
    in_channels: int = 3  # 3 for pixels, 4 for latents
    out_channels: int | None = None  # None: same as in_channels
    cond_channels: int = 0  # extra x_cond input channels (inpainting mask, low-res image); 0: none
    channels: tuple[int, ...] = (64, 128, 256)  # per level; len - 1 downsamplings
    layers_per_block: int = 2  # residual blocks per level on the way down (+1 on the way up)
    attention_levels: tuple[int, ...] = (1, 2)  # level indices (0 = full resolution) with attention
    mid_attention: bool = True  # a transformer in the middle block
    head_dim: int = 32  # channels per attention head
    transformer_depth: int = 1  # transformer blocks per attention layer
    mid_depth: int = 0  # transformer blocks in the middle block; 0: transformer_depth. Where a
    #                     scene's parts meet at the lowest resolution: a trained UNet grown here
    #                     with --init starts its new blocks as the identity (diffusion_init.py)
    context_dim: int = 384  # text token width for cross-attention; 0: no cross-attention
    pooled_dim: int = 0  # pooled text embedding added to the time embedding (Imagen); 0: unused
    groups: int = 32  # GroupNorm groups
    dropout: float = 0.0
    patch_size: int = 1  # >1: pixel-unshuffle p x p patches into channels first (a pixel model
    #                       then runs at 1/p^2 of the positions, as "simple diffusion"); 1: none
    position_features: int = 0  # >0: add n Fourier features per axis of where each position
    #                               is (a zero-initialised 1x1 conv after the stem); 0: none
    context_layers: int = 0  # >0: trainable transformer blocks over the (frozen) text states
    #                          before cross-attention, each zero-initialised (identity at first)
    stem_kernel: int = 3  # kernel of the input and output convolutions; 1 for inputs whose
    #                       positions are patches (a linear patch embedding, as DiT's)
    guidance_embedding: bool = False  # the guidance scale w as an input, added to the time
    #                                   embedding (an LCM student: one pass per step at any w)

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.attention_levels = tuple(self.attention_levels)
        self.validate()

    @property
    def factor(self) -> int:
        """How much the network downsamples: input sides must be multiples of this."""
        return 2 ** (len(self.channels) - 1) * self.patch_size

    @property
    def level_ends(self) -> list[int]:
        """Index in UNet.down of each level's last residual block (before its downsampling)."""
        per = self.layers_per_block
        return [level * (per + 1) + per - 1 for level in range(len(self.channels))]

    @property
    def skips(self) -> int:
        """How many skips the down path keeps: the stem's, then one per block of UNet.down."""
        levels = len(self.channels)
        return 1 + levels * self.layers_per_block + levels - 1

    def validate(self) -> None:
        if not self.channels or min(self.channels) <= 0:
            raise ValueError(f"channels must be positive, got {self.channels}")
        for ch in self.channels:
            check_groups(ch, self.groups, "UNetConfig.channels")
        bad = [i for i in self.attention_levels if not 0 <= i < len(self.channels)]
        if bad:
            raise ValueError(
                f"attention_levels {bad} out of range; levels are 0..{len(self.channels) - 1}"
            )
        used = [self.channels[i] for i in self.attention_levels]
        if self.mid_attention:
            used.append(self.channels[-1])
        if any(ch % self.head_dim for ch in used):
            raise ValueError(f"head_dim={self.head_dim} must divide attention channels {used}")
        if self.layers_per_block < 1 or self.in_channels < 1:
            raise ValueError("layers_per_block and in_channels must be >= 1")
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.stem_kernel not in (1, 3):
            raise ValueError(f"stem_kernel must be 1 or 3, got {self.stem_kernel}")
        if self.position_features < 0:
            raise ValueError(f"position_features must be >= 0, got {self.position_features}")
        if self.mid_depth < 0 or (self.mid_depth and not self.mid_attention):
            raise ValueError(
                f"mid_depth must be >= 0 and needs mid_attention, got mid_depth={self.mid_depth}, "
                f"mid_attention={self.mid_attention}"
            )
        if self.context_layers < 0 or (self.context_layers and not self.context_dim):
            raise ValueError(
                f"context_layers must be >= 0 and needs context_dim > 0, got "
                f"context_layers={self.context_layers}, context_dim={self.context_dim}"
            )
        if self.context_layers and self.context_dim % self.head_dim:
            raise ValueError(
                f"head_dim={self.head_dim} must divide context_dim={self.context_dim} "
                "for context_layers"
            )

    @classmethod
    def preset(cls, name: str, **overrides) -> UNetConfig:
        """A named size; keyword overrides replace fields (e.g. in_channels=4 for latents)."""
        if name not in UNET_PRESETS:
            raise ValueError(f"unknown UNet preset {name!r}; choose from {sorted(UNET_PRESETS)}")
        return replace(UNET_PRESETS[name], **overrides)


UNET_PRESETS: dict[str, UNetConfig] = {
    # tests: one level of attention, a few thousand parameters
    "tiny": UNetConfig(
        channels=(16, 32),
        layers_per_block=1,
        attention_levels=(1,),
        head_dim=16,
        context_dim=32,
        groups=8,
    ),
    # 32x32 / 64x64 pixel models on 2 CPU cores
    "small": UNetConfig(
        channels=(32, 64, 128),
        layers_per_block=1,
        attention_levels=(2,),
        head_dim=32,
        groups=16,
    ),
    # 16x16x4 latent model (64x64 images through an f4 autoencoder: 16x16 = f4 of 64)
    "latent": UNetConfig(
        in_channels=4,
        channels=(64, 128, 256),
        layers_per_block=1,
        attention_levels=(1, 2),
        head_dim=32,
    ),
    # 64x64 pixel model through a 4x4 patch stem: the cost of the latent model, no autoencoder
    "pixel64": UNetConfig(
        channels=(64, 128, 192),
        layers_per_block=1,
        attention_levels=(0, 1, 2),
        head_dim=32,
        patch_size=4,
    ),
    "base": UNetConfig(channels=(64, 128, 256), layers_per_block=2, attention_levels=(1, 2)),
    "large": UNetConfig(
        channels=(128, 256, 256, 512), layers_per_block=2, attention_levels=(1, 2, 3)
    ),
}


class UNet(nn.Module):
    """Noise-prediction UNet: net(x, t, context, context_mask, pooled, x_cond) -> like x."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        ch0 = c.channels[0]
        temb = 4 * ch0
        ctx = c.context_dim or None
        heads = {i: c.channels[i] // c.head_dim for i in c.attention_levels}
        self.time_mlp = nn.Sequential(nn.Linear(ch0, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.pooled_proj = nn.Linear(c.pooled_dim, temb) if c.pooled_dim else None
        if self.pooled_proj is not None:  # starts at zero: added to a trained UNet, it is exact
            nn.init.zeros_(self.pooled_proj.weight)
            nn.init.zeros_(self.pooled_proj.bias)
        # Zero-initialised like every part added to a trained network: a distilled student
        # starts as exactly its teacher and learns what w means (Luo et al. 2023, LCM's w-cond).
        # One linear map of w's sinusoidal features (the time embedding's nonlinearity follows),
        # so every new weight starts at zero and `--init` from the teacher is exact.
        self.guidance_proj = None
        if c.guidance_embedding:
            self.guidance_proj = nn.Linear(ch0, temb)
            nn.init.zeros_(self.guidance_proj.weight)
            nn.init.zeros_(self.guidance_proj.bias)
        p2 = c.patch_size**2
        k, pad = c.stem_kernel, c.stem_kernel // 2
        self.conv_in = nn.Conv2d((c.in_channels + c.cond_channels) * p2, ch0, k, padding=pad)
        # Convolutions and attention are blind to absolute position; captions such as "in the
        # top left" need it. Zero-initialised: a UNet without it loads and computes the same.
        self.pos_proj = None
        if c.position_features:
            self.pos_proj = nn.Conv2d(4 * c.position_features, ch0, 1)
            nn.init.zeros_(self.pos_proj.weight)
            nn.init.zeros_(self.pos_proj.bias)

        # A frozen sentence encoder keeps some words' states local (MiniLM: "top left" barely
        # takes in the rest of the caption); trainable blocks let each token take in the others
        # before cross-attention reads them. Measured so far: no clear gain in placement on the
        # shapes data (docs/history.md, "The background as an input makes placement learnable").
        self.context_blocks = nn.ModuleList(
            TransformerBlock(c.context_dim, c.context_dim // c.head_dim)
            for _ in range(c.context_layers)
        )
        for block in self.context_blocks:  # a model without them loads and computes the same
            block.start_as_identity()

        def res(i: int, o: int) -> ResBlock:
            return ResBlock(i, o, c.groups, c.dropout)

        def attn(level: int, ch: int) -> SpatialTransformer | None:
            if level not in heads:
                return None
            return SpatialTransformer(ch, heads[level], ctx, c.groups, c.transformer_depth)

        # down: every block output is kept as a skip connection for the up path
        self.down = nn.ModuleList()
        skips, prev = [ch0], ch0
        for level, ch in enumerate(c.channels):
            for _ in range(c.layers_per_block):
                self.down.append(nn.ModuleList([res(prev, ch), attn(level, ch)]))
                skips.append(prev := ch)
            if level < len(c.channels) - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
        mid_ch = c.channels[-1]
        mid_heads = mid_ch // c.head_dim
        self.mid_res1 = res(mid_ch, mid_ch)
        self.mid_attn = (
            SpatialTransformer(mid_ch, mid_heads, ctx, c.groups, c.mid_depth or c.transformer_depth)
            if c.mid_attention
            else None
        )
        self.mid_res2 = res(mid_ch, mid_ch)
        # up: layers_per_block + 1 blocks per level, each eating one skip
        self.up = nn.ModuleList()
        for level in reversed(range(len(c.channels))):
            ch = c.channels[level]
            for _ in range(c.layers_per_block + 1):
                self.up.append(nn.ModuleList([res(prev + skips.pop(), ch), attn(level, ch)]))
                prev = ch
            if level > 0:
                self.up.append(nn.ModuleList([Upsample(ch)]))
        assert not skips
        # the time embedding of every ResBlock, in forward order, from one matmul
        blocks = [b[0] for b in self.down] + [self.mid_res1, self.mid_res2]
        blocks += [b[0] for b in self.up]
        self.emb_sizes = [b.out_ch for b in blocks if isinstance(b, ResBlock)]
        self.emb_proj = nn.Linear(temb, sum(self.emb_sizes))
        self.norm_out = nn.GroupNorm(c.groups, ch0, eps=1e-6)
        self.conv_out = nn.Conv2d(ch0, (c.out_channels or c.in_channels) * p2, k, padding=pad)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
        x_cond: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        control: Residuals | None = None,
    ) -> torch.Tensor:
        """x (B, C, H, W), t (B,), context (B, L, D), context_mask (B, L) bool, pooled (B, Dp),
        x_cond (B, Cc, H, W), guidance (B,) the scale w (guidance_embedding), control: what
        ControlNets and T2I-Adapters add to its features (t2i/models/control.py) ->
        (B, C_out, H, W)."""
        h, embs, text = self.stem(x, t, context, context_mask, pooled, x_cond, guidance)
        hs, h = self.encode(h, embs, text, control)
        return self.decode(h, hs, embs, text)

    def stem(self, x, t, context=None, context_mask=None, pooled=None, x_cond=None, guidance=None):
        """The first convolution's features, the blocks' time embeddings (an iterator, in
        forward order) and the text (context, mask, keep) the attention layers read."""
        c = self.config
        if (x_cond is None) != (c.cond_channels == 0):
            raise ValueError(
                f"x_cond must be given exactly when cond_channels > 0 (it is "
                f"{c.cond_channels}); got x_cond={None if x_cond is None else 'a tensor'}"
            )
        if x_cond is not None:
            x = torch.cat([x, x_cond.to(x.dtype)], dim=1)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t, c.channels[0]).to(x.dtype))
        if self.pooled_proj is not None:
            if pooled is None:
                raise ValueError(
                    f"this UNet adds a pooled text embedding: pass pooled (B, {c.pooled_dim})"
                )
            emb = emb + self.pooled_proj(pooled)
        emb = self._add_guidance(emb, guidance, x.shape[0])
        embs = iter(self.emb_proj(F.silu(emb)).split(self.emb_sizes, dim=1))
        if c.context_dim and context is None:
            raise ValueError("this UNet has cross-attention: pass context (B, L, context_dim)")
        mask, keep = attention_mask(context_mask)
        for block in self.context_blocks:
            context = block(context, self_mask=mask)

        if c.patch_size > 1:
            x = F.pixel_unshuffle(x, c.patch_size)  # (B, C, H, W) -> (B, C p^2, H/p, W/p)
        h = self.conv_in(x)
        if self.pos_proj is not None:
            pos = position_features(h.shape[-2], h.shape[-1], c.position_features)
            h = h + self.pos_proj(pos.to(device=h.device, dtype=h.dtype))
        return h, embs, (context, mask, keep)

    def encode(self, h, embs, text, control: Residuals | None = None):
        """The down path and the middle block: (the skips, the middle's output). `control`
        adds to the down path (T2I-Adapter), to the skips and the middle (ControlNet)."""
        add = control.down if control is not None else {}
        hs = [h]
        for i, block in enumerate(self.down):
            h = self._block(block, h, embs, *text)
            if i in add:
                h = h + add[i]
            hs.append(h)
        h = self.mid_res1(h, next(embs))
        if self.mid_attn is not None:
            h = self.mid_attn(h, *text)
        h = self.mid_res2(h, next(embs))
        if control is not None:
            hs = [s if r is None else s + r for s, r in zip(hs, control.skips, strict=True)]
            h = h if control.mid is None else h + control.mid
        return hs, h

    def decode(self, h, hs: list, embs, text) -> torch.Tensor:
        """The up path over the skips, then the output convolution."""
        c = self.config
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._block(block, h, embs, *text)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, c.patch_size) if c.patch_size > 1 else out

    @property
    def skip_channels(self) -> list[int]:
        """Channels of each skip the down path keeps, in order (the stem's first)."""
        out = [self.config.channels[0]]
        for block in self.down:
            first = block[0]
            out.append(first.out_ch if isinstance(first, ResBlock) else out[-1])
        return out

    @property
    def level_ends(self) -> list[int]:
        return self.config.level_ends

    def _add_guidance(self, emb: torch.Tensor, guidance, batch: int) -> torch.Tensor:
        if self.guidance_proj is None:
            if guidance is not None:
                raise ValueError("this UNet has no guidance embedding: guidance must be None")
            return emb
        if guidance is None:
            raise ValueError("this UNet embeds the guidance scale: pass guidance (B,)")
        w = torch.as_tensor(guidance, dtype=torch.float32, device=emb.device).expand(batch)
        # w in [1, 10] spans timestep_embedding's usual range [100, 1000]
        features = timestep_embedding(w * 100, self.config.channels[0]).to(emb.dtype)
        return emb + self.guidance_proj(features)

    @staticmethod
    def _block(block: nn.ModuleList, h, embs, context, mask, keep) -> torch.Tensor:
        first = block[0]
        if not isinstance(first, ResBlock):
            return first(h)  # Downsample / Upsample
        h = first(h, next(embs))
        if block[1] is not None:
            h = block[1](h, context, mask, keep)
        return h
