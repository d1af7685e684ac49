"""Training sample grids that carry their prompts: tiles enlarged to a visible size, each
numbered, and a legend of the numbered prompts beside them, so a grid read on its own says what
each image was asked to be."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

from t2i.images import image_grid

MIN_TILE = 64  # px: a 16 or 32 px sample is enlarged (nearest) to at least this
LEGEND_CHARS = 56  # a longer prompt is cut with "..."


def prompt_grid(images: torch.Tensor, prompts: list[str], cols: int = 4) -> Image.Image:
    """(B, C, H, W) in [-1, 1] and B prompts -> the grid with numbers and a legend."""
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    side = images.shape[-1]
    scale = max(1, -(-MIN_TILE // side))
    if scale > 1:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=scale)
    grid = image_grid(images, cols=cols)
    font = ImageFont.load_default(size=12)
    draw = ImageDraw.Draw(grid)
    tile = images.shape[-1] + 2
    for i in range(len(prompts)):
        x, y = 2 + (i % cols) * tile, 2 + (i // cols) * tile
        draw.text((x + 2, y + 1), str(i + 1), "yellow", font, stroke_width=2, stroke_fill="black")
    lines = [f"{i + 1}. {shorten(p)}" for i, p in enumerate(prompts)]
    width = max(draw.textlength(line, font) for line in lines) + 12
    sheet = Image.new(
        "RGB", (grid.width + int(width), max(grid.height, 16 * len(lines) + 8)), "white"
    )
    sheet.paste(grid, (0, 0))
    legend = ImageDraw.Draw(sheet)
    for k, line in enumerate(lines):
        legend.text((grid.width + 6, 4 + 16 * k), line, "black", font)
    return sheet


def shorten(prompt: str) -> str:
    return prompt if len(prompt) <= LEGEND_CHARS else prompt[: LEGEND_CHARS - 3] + "..."
