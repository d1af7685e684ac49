"""Condition images for spatial controls (t2i/models/control.py), derived from a data item, and
the measures of how well an image follows one.

Every condition is a grey map in [0, 1], white on black, at the image's size (1, H, W):
    edges    Canny edges of the image (scikit-image's `feature.canny`: a well-kept implementation)
    sketch   the edges as a person would draw them: thinned, bent by a smooth random field, broken
             in places and drawn one or two pixels wide, so hand-drawn strokes are in distribution
    layout   the objects' silhouettes (shapes: from the renderer, exact; a user's images have no
             layout detector here, so `layout` is refused for them)

`edge_f1` and `layout_iou` measure a generated image against the condition it was given.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage.feature import canny
from skimage.morphology import thin

from t2i.data.shapes import GRID, SIZES, SUPERSAMPLE, Scene, draw_shape

KINDS = ("edges", "sketch", "layout")
CANNY_SIGMA = 1.0  # Gaussian smoothing before the gradient, in pixels (64 px emoji, 32 px fashion)
CANNY_LOW, CANNY_HIGH = 0.1, 0.2  # hysteresis thresholds on the gradient of a [0, 1] image
FOREGROUND = 60.0  # RGB distance from the background colour that makes a pixel an object's


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown condition kind {kind!r}; choose from {list(KINDS)}")
    return kind


def edges(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) in [-1, 1] -> (1, H, W) in {0, 1}: Canny edges of each channel, joined (a
    purple shape on grey has the grey's brightness: only its colour channels show its edge)."""
    channels = ((image.float() + 1) / 2).clamp(0, 1).numpy()
    found = np.zeros(channels.shape[1:], bool)
    for channel in channels:
        found |= canny(channel, CANNY_SIGMA, low_threshold=CANNY_LOW, high_threshold=CANNY_HIGH)
    return torch.from_numpy(found.astype(np.float32))[None]


def sketch(image: torch.Tensor, seed: int) -> torch.Tensor:
    """(C, H, W) in [-1, 1] -> (1, H, W): the edges redrawn as strokes, randomly per seed."""
    rng = np.random.default_rng(seed)
    lines = thin(edges(image)[0].numpy() > 0)
    h, w = lines.shape
    # a smooth displacement of up to ~1.5 px: strokes wander as a hand's do
    field = [ndimage.gaussian_filter(rng.normal(size=(h, w)), 4) for _ in range(2)]
    field = [f / (np.abs(f).max() + 1e-8) * rng.uniform(0.5, 1.5) for f in field]
    ys, xs = np.nonzero(lines)
    ys = np.clip(np.round(ys + field[0][ys, xs]), 0, h - 1).astype(int)
    xs = np.clip(np.round(xs + field[1][ys, xs]), 0, w - 1).astype(int)
    gaps = ndimage.gaussian_filter(rng.normal(size=(h, w)), 1.5)  # broken in 5-20% of places
    keep = gaps[ys, xs] > gaps.std() * rng.uniform(-1.6, -0.85)
    drawn = np.zeros((h, w), bool)
    drawn[ys[keep], xs[keep]] = True
    if rng.random() < 0.5:  # a thicker pen
        drawn = ndimage.binary_dilation(drawn)
    return torch.from_numpy(drawn.astype(np.float32))[None]


def layout(scene: Scene, size: int) -> torch.Tensor:
    """(1, size, size) in [0, 1]: the scene's objects white on black, drawn as the renderer
    draws them (anti-aliased the same way)."""
    big = size * SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    cell = big / GRID
    for o in scene.objects:
        cx, cy = (o.cell[1] + 0.5) * cell, (o.cell[0] + 0.5) * cell
        draw_shape(draw, o.shape, cx, cy, SIZES[o.size] * cell, 255)
    small = np.asarray(img.resize((size, size), Image.BOX), dtype=np.float32) / 255
    return torch.from_numpy(small)[None]


def condition(kind: str, item: dict, seed: int = 0) -> torch.Tensor:
    """The condition of `kind` for a data item {"image", ["scene"]}; seed: a sketch's strokes."""
    check_kind(kind)
    if kind == "edges":
        return edges(item["image"])
    if kind == "sketch":
        return sketch(item["image"], seed)
    if "scene" not in item:
        raise ValueError(
            "condition layout needs the objects' outlines, which only the shapes data knows "
            "(its renderer); for other images use edges or sketch"
        )
    return layout(item["scene"], item["image"].shape[-1])


# ----------------------------------------------------------------------------- fidelity


def edge_f1(found: torch.Tensor, wanted: torch.Tensor, tolerance: int = 1) -> float:
    """F1 of the edge pixels of `found` against `wanted` ((1, H, W) or (H, W) maps), each pixel
    counted right when the other map has an edge within `tolerance` pixels (a square window).
    Two empty maps agree (1.0)."""
    a, b = (np.asarray(m).reshape(m.shape[-2:]) > 0.5 for m in (found, wanted))
    if not a.any() and not b.any():
        return 1.0
    window = np.ones((2 * tolerance + 1,) * 2, bool)
    near_b, near_a = ndimage.binary_dilation(b, window), ndimage.binary_dilation(a, window)
    precision = (a & near_b).sum() / max(a.sum(), 1)
    recall = (b & near_a).sum() / max(b.sum(), 1)
    return float(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))


def foreground(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W) bool: pixels far from the background colour (the median
    of the border pixels) in RGB, as a shapes scene's objects are."""
    rgb = ((image.float().clamp(-1, 1) + 1) * 127.5).numpy()
    border = np.concatenate([rgb[:, 0], rgb[:, -1], rgb[:, :, 0], rgb[:, :, -1]], axis=1)
    background = np.median(border, axis=1)
    return np.linalg.norm(rgb - background[:, None, None], axis=0) > FOREGROUND


def layout_iou(image: torch.Tensor, scene: Scene) -> tuple[float, float]:
    """(mean IoU per object, IoU of the whole mask) of the image's objects against the scene's
    silhouettes; an object's IoU is taken within its own grid cell (one object per cell)."""
    size = image.shape[-1]
    found = foreground(image)
    wanted = layout(scene, size)[0].numpy() > 0.5
    per_object = []
    for o in scene.objects:
        rows, cols = (
            slice(o.cell[i] * size // GRID, (o.cell[i] + 1) * size // GRID) for i in (0, 1)
        )
        per_object.append(iou(found[rows, cols], wanted[rows, cols]))
    return float(np.mean(per_object)) if per_object else 1.0, iou(found, wanted)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)
