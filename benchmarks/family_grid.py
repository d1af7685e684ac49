"""One grid, one row per model of any family, the same prompts and seeds in every row: what the
families draw side by side (README, "The families side by side").

    python3 benchmarks/family_grid.py fashion runs/gan/fashion/model runs/draw_fashion/model \
        --names diffusion GAN AlignDRAW --prompts "a dress" "a sneaker" --out grid.png
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw

import t2i
from t2i.images import to_pil

LABEL_WIDTH = 90


@torch.no_grad()
def row(pipe, prompts: list[str], seed: int, scale: int) -> list[Image.Image]:
    """Image i: prompts[i] at `seed`, at the model's own defaults, enlarged `scale` times."""
    images = pipe.generate_items([pipe.params(p, seed=seed) for p in prompts])
    return [im.convert("RGB").resize((im.width * scale,) * 2, Image.NEAREST)
            for im in to_pil(images)]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="bundled model names or model folders")
    ap.add_argument("--names", nargs="+", default=None, help="a label per model")
    ap.add_argument("--prompts", nargs="+", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="each tile's side in the grid (64)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    names = args.names or args.models
    if len(names) != len(args.models):
        raise SystemExit(f"{len(names)} names for {len(args.models)} models")
    rows = []
    for model in args.models:
        pipe = t2i.load(model)
        rows.append(row(pipe, args.prompts, args.seed, max(1, args.size // pipe.image_size)))
    side = rows[0][0].width
    grid = Image.new("RGB", (LABEL_WIDTH + side * len(args.prompts), side * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (name, tiles) in enumerate(zip(names, rows)):
        draw.text((4, r * side + side // 2 - 6), name, fill="black")
        for c, tile in enumerate(tiles):
            grid.paste(tile, (LABEL_WIDTH + c * side, r * side))
    grid.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
