"""Images in and out: tensors in [-1, 1] <-> PIL images, and the init images and masks a request
names, read and checked before any work starts."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) in [-1, 1] -> B PIL images (RGB or L)."""
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


MAX_SIDE = 1024  # pixels of an image read or drawn
FORMATS = ("PNG", "JPEG", "WEBP")  # what is decoded: no other PIL plugin is reached


def check_header(img: Image.Image, what: str) -> Image.Image:
    """An opened, not yet decoded image of an allowed size, or a ValueError naming it: checked
    from the header, so nothing large is ever decoded (open_checked opens FORMATS only)."""
    w, h = img.size
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise ValueError(f"{what} is {w}x{h}; each side must be in [1, {MAX_SIDE}] pixels")
    return img


def open_checked(source, what: str):
    """Image.open limited to FORMATS, with PIL's own errors (decompression bombs included) as a
    ValueError that names `what`; `source` is a path or a binary file."""
    try:
        with warnings.catch_warnings():  # nothing is decoded: check_header refuses by size
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source, formats=FORMATS)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read {what} as an image ({', '.join(FORMATS)}): {err}") from err
    try:
        return check_header(img, what)
    except ValueError:
        img.close()
        raise


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(W, H) of an init image, read from its header without decoding its pixels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init image {str(path)!r} does not exist")
    with open_checked(path, f"init image {str(path)!r}") as img:
        return img.size


def open_image(path: str | Path | Image.Image, what: str) -> Image.Image:
    """A decoded copy of an image file (or the image itself); `what` names it in errors."""
    if isinstance(path, Image.Image):
        return path
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    with open_checked(path, f"{what} {str(path)!r}") as img:
        try:
            img.load()
        except (OSError, Image.DecompressionBombError) as err:
            raise ValueError(f"cannot decode {what} {str(path)!r}: {err}") from err
        return img.copy()


def load_image(
    path: str | Path | Image.Image,
    size: tuple[int, int] | None = None,
    channels: int = 3,
    what: str = "init image",
) -> torch.Tensor:
    """An image file -> (1, C, H, W) in [-1, 1]; `size` (W, H) must match when given; `what`
    names the image in errors."""
    img = open_image(path, what)
    if size is not None and img.size != tuple(size):
        raise ValueError(
            f"{what} is {img.size[0]}x{img.size[1]}, the request is {size[0]}x{size[1]}; "
            "resize the image or pass its size"
        )
    img = img.convert("L" if channels == 1 else "RGB")
    a = np.asarray(img, dtype=np.float32).reshape(img.size[1], img.size[0], -1)
    return torch.from_numpy(a.transpose(2, 0, 1) / 127.5 - 1.0)[None]


def load_mask(path: str | Path | Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A mask file -> (1, 1, H, W) float in {0, 1}: 1 (white) = repaint, 0 (black) = keep."""
    img = open_image(path, "mask")
    if img.size != tuple(size):
        raise ValueError(
            f"mask is {img.size[0]}x{img.size[1]} but the image is {size[0]}x{size[1]}; "
            "the mask must have the image's size"
        )
    a = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy((a >= 0.5).astype(np.float32))[None, None]


def shrink(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w) by box averaging (area), as the data's own renderers do."""
    return torch.nn.functional.interpolate(images, size=size, mode="area")


def enlarge(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, H, W), bilinear: a cascade's small image at its upscaler's size."""
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)


def image_grid(images: torch.Tensor, cols: int = 8, pad: int = 2) -> Image.Image:
    """(B, C, H, W) in [-1, 1] -> one RGB image, `cols` per row, row-major, `pad` px white gaps:
    the training sample grids and `t2i eval`'s grid.png."""
    tiles = [t.convert("RGB") for t in to_pil(images.float())]
    cols = min(cols, len(tiles))
    rows = -(-len(tiles) // cols)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return sheet


def psnr(x: torch.Tensor, y: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """Peak signal-to-noise ratio 10 log10(R^2 / MSE) per image, averaged over the batch;
    R = hi - lo of `value_range` (2 for the project's [-1, 1]); identical images give inf.

    x, y: (B, C, H, W) of one shape (a reconstruction and its original, in any order)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"need two (B, C, H, W) batches of one shape, got {x.shape}, {y.shape}")
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    r = value_range[1] - value_range[0]
    return float((10 * torch.log10(r**2 / mse)).mean())
