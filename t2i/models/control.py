"""Spatial control of a frozen UNet: ControlNet (Zhang et al. 2023) and T2I-Adapter (Mou et al.
2023). Both read a condition image (an edge map, a sketch, a layout) and return `Residuals` that
`UNet.forward(..., control=)` adds to its features; the base's weights never change.

ControlNet: a trainable copy of the base's stem, down path and middle block, initialised from the
base, reads the noisy input plus the encoded condition; each of its skips and its middle output
goes through a zero-initialised 1x1 convolution into the base's skips and middle, so a fresh one
adds exactly nothing. It runs at every step (it sees x_t and t).

T2I-Adapter: a small convolutional pyramid over the condition alone, one feature map per level of
the base, added to the base's down path at the end of each level. It does not see x_t or t, so
its features are computed once per image, not once per step. Its output convolutions also start
at zero here (the paper's do not): a fresh adapter changes nothing, like a fresh ControlNet.

Both read the condition at image resolution and bring it to the UNet's first feature grid by
resizing it to a multiple r of that grid and folding each r x r patch into channels (r = 4 for
64 px over a 16x16 latent, 21 for the 3x3 grid of `shapes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.control_residuals import Residuals
from t2i.models.unet import UNet, UNetConfig

ARCHS = ("controlnet", "t2i_adapter")


@dataclass
class ControlConfig:
    arch: str = "controlnet"  # or "t2i_adapter"
    kind: str = "edges"  # what the condition image is (t2i/data/conditions.py)
    unet: UNetConfig = field(default_factory=UNetConfig)  # the base model's UNet
    image_size: int = 64  # the condition's side: the generated image's
    grid: int = 16  # side of the UNet's first feature grid at that image size (unet_grid)
    hint_channels: int = 1  # channels of the condition image (grey maps: 1)
    hint_width: int = 64  # channels of the condition encoder
    adapter_blocks: int = 1  # T2I-Adapter: residual blocks per level (0: a strided conv each)

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**{k: v for k, v in self.unet.items() if k != "type"})
        self.validate()

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"control arch {self.arch!r}; choose from {list(ARCHS)}")
        if self.hint_channels not in (1, 3):
            raise ValueError(f"hint_channels must be 1 or 3, got {self.hint_channels}")
        if self.grid < 1 or self.grid > self.image_size:
            raise ValueError(f"grid {self.grid} must be in [1, image_size {self.image_size}]")
        if self.image_size < 8 or self.hint_width < 8 or self.adapter_blocks < 0:
            raise ValueError(
                f"image_size {self.image_size} and hint_width {self.hint_width} must be >= 8, "
                f"adapter_blocks {self.adapter_blocks} >= 0"
            )


def zero_conv(cin: int, cout: int, kernel: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class HintEncoder(nn.Module):
    """(B, Ch, S, S) condition in [0, 1] -> (B, out, g, g) on the UNet's first feature grid."""

    def __init__(self, channels: int, width: int, out: int, image_size: int, grid: int):
        super().__init__()
        self.grid = grid
        self.ratio = max(1, round(image_size / grid))
        folded = channels * self.ratio**2
        self.net = nn.Sequential(
            nn.Conv2d(folded, width, 1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
        )
        self.out = nn.Conv2d(width, out, 3, padding=1)

    def forward(self, hint: torch.Tensor) -> torch.Tensor:
        side = self.grid * self.ratio
        if hint.shape[-1] != side or hint.shape[-2] != side:
            hint = F.interpolate(hint, size=(side, side), mode="area")
        return self.out(self.net(F.pixel_unshuffle(hint, self.ratio)))


class ControlNet(nn.Module):
    """A trainable copy of the base's encoder; control(x, t, hint, **cond) -> Residuals."""

    def __init__(self, config: ControlConfig):
        super().__init__()
        self.config = config
        grid = config.grid
        copy = UNet(config.unet)
        del copy.up, copy.norm_out, copy.conv_out  # only the stem, the down path, the middle
        self.copy = copy
        ch0 = config.unet.channels[0]
        self.hint = HintEncoder(
            config.hint_channels, config.hint_width, ch0, config.image_size, grid
        )
        nn.init.zeros_(self.hint.out.weight)  # ControlNet's hint encoder ends in a zero conv too
        nn.init.zeros_(self.hint.out.bias)
        self.zero_skips = nn.ModuleList(zero_conv(ch, ch) for ch in copy.skip_channels)
        mid = config.unet.channels[-1]
        self.zero_mid = zero_conv(mid, mid)

    def init_from(self, base: UNet) -> None:
        """The copy starts as the base's own encoder (ControlNet's "trainable copy")."""
        own = self.copy.state_dict()
        shared = {k: v for k, v in base.state_dict().items() if k in own}
        self.copy.load_state_dict(shared, strict=True)

    def forward(self, x, t, hint, context=None, context_mask=None, pooled=None, x_cond=None,
                guidance=None) -> Residuals:  # fmt: skip
        h, embs, text = self.copy.stem(x, t, context, context_mask, pooled, x_cond, guidance)
        h = h + self.hint(hint.to(h.dtype))
        hs, mid = self.copy.encode(h, embs, text)
        skips = [conv(s) for conv, s in zip(self.zero_skips, hs, strict=True)]
        return Residuals(skips, self.zero_mid(mid))


class AdapterBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(F.silu(self.conv1(h)))


class T2IAdapter(nn.Module):
    """A pyramid over the condition alone; adapter(x, t, hint, **cond) -> Residuals (x and t
    are not read: `features(hint)` can be computed once per image)."""

    def __init__(self, config: ControlConfig):
        super().__init__()
        self.config = config
        grid = config.grid
        u = config.unet
        self.hint = HintEncoder(config.hint_channels, config.hint_width, u.channels[0],
                                config.image_size, grid)  # fmt: skip
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.outs = nn.ModuleList()
        prev = u.channels[0]
        for level, ch in enumerate(u.channels):
            self.downs.append(
                nn.Identity() if level == 0 else nn.Conv2d(prev, ch, 3, stride=2, padding=1)
            )
            self.levels.append(
                nn.Sequential(*(AdapterBlock(ch) for _ in range(config.adapter_blocks)))
            )
            self.outs.append(zero_conv(ch, ch))
            prev = ch
        self.level_ends, self.skips = u.level_ends, u.skips

    def features(self, hint: torch.Tensor) -> dict[int, torch.Tensor]:
        h = self.hint(hint)
        out = {}
        for down, level, conv, index in zip(self.downs, self.levels, self.outs, self.level_ends):
            h = level(down(h))
            out[index] = conv(h)
        return out

    def forward(self, x, t, hint, **cond) -> Residuals:
        return Residuals([None] * self.skips, None, self.features(hint.to(x.dtype)))


def build_control(config: ControlConfig) -> nn.Module:
    """The network of config.arch (ControlNet or T2IAdapter)."""
    return (ControlNet if config.arch == "controlnet" else T2IAdapter)(config)


def unet_grid(unet: UNetConfig, latent_side: int) -> int:
    """The side of a UNet's first feature grid over latents (or pixels) of latent_side."""
    if latent_side % unet.patch_size:
        raise ValueError(f"side {latent_side} is not a multiple of patch_size {unet.patch_size}")
    return latent_side // unet.patch_size
