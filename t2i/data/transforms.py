"""Image transforms: mode conversion (grey, palette, alpha), resize, centre/random crop, flip.

Horizontal flip is off by default: it turns "left of" into "right of" and breaks the caption.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

CROPS = ("center", "random", "none")


@dataclass
class TransformConfig:
    size: int | None = 64  # output side; None keeps the image size (no resize, no crop)
    crop: str = "center"  # "center", "random", or "none" (resize to size x size, aspect not kept)
    hflip: bool = False  # random horizontal flip: off, it breaks captions with "left of"
    channels: int = 3  # 3 = RGB, 1 = grey
    background: tuple[int, int, int] = (255, 255, 255)  # alpha is composited on this colour

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; choose from {list(CROPS)}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels}; choose from [1, 3]")


def to_mode(img: Image.Image, channels: int = 3, background=(255, 255, 255)) -> Image.Image:
    """Any PIL mode -> RGB (or L); palette and alpha images are composited on `background`."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(base, rgba)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scale to 8 bits
        a = np.asarray(img, dtype=np.float32)
        img = Image.fromarray((a / max(a.max(), 1) * 255).astype(np.uint8), "L")
    return img.convert("RGB" if channels == 3 else "L")


def resize_crop(img: Image.Image, size: int, crop: str, rng: random.Random | None) -> Image.Image:
    """Resize the shorter side to `size`, then crop a size x size square (centre or random)."""
    if crop == "none":
        return img.resize((size, size), Image.BICUBIC)
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    if crop == "random":
        rng = rng or random.Random()
        x, y = rng.randint(0, nw - size), rng.randint(0, nh - size)
    else:
        x, y = (nw - size) // 2, (nh - size) // 2
    return img.crop((x, y, x + size, y + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image (L or RGB) -> FloatTensor (C, H, W) in [-1, 1]."""
    a = np.asarray(img, dtype=np.float32)
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(a.transpose(2, 0, 1).copy()) / 127.5 - 1.0


def apply(img: Image.Image, cfg: TransformConfig, rng: random.Random | None = None) -> torch.Tensor:
    """The whole transform: mode -> resize/crop -> optional flip -> tensor (C, size, size)."""
    img = to_mode(img, cfg.channels, cfg.background)
    if cfg.size is not None:
        img = resize_crop(img, cfg.size, cfg.crop, rng)
    if cfg.hflip and (rng or random).random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return to_tensor(img)
