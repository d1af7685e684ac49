"""Grids of an unCLIP model (issue 31): variations of real held-out images (each row: the real
image, then variations from seeds 0..k-1), and interpolation strips between two real images'
CLIP embeddings (one seed).

    OMP_NUM_THREADS=1 python3 benchmarks/unclip_grids.py runs/unclip/decoder/model \\
        --data data_cache/emoji64 --keys 1f355 1f405 1f344/noto 1f41f/noto 26f5/noto \\
        2639/noto 1fad0 1f462 --pairs 1f355:1f96f 1f344/noto:26fa/noto \\
        --out docs/samples/unclip_emoji
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import t2i
from t2i.evaluation.emoji_clip import load_images, load_rows
from t2i.images import image_grid


def real_image(root: str, key: str, style: str) -> torch.Tensor:
    """(1, 3, S, S) of the emoji `key` ("KEY" or "KEY/STYLE") in its style (any split;
    held-out ones preferred)."""
    key, _, own = key.partition("/")
    style = own or style
    rows = load_rows(root, "heldout") + load_rows(root, "train")
    found = [r for r in rows if r["key"] == key and r["style"] == style]
    found = found or [r for r in rows if r["key"] == key]
    if not found:
        raise ValueError(f"no emoji {key!r} in {root}")
    return load_images(root, found[:1])


def enlarge(images: torch.Tensor, side: int = 96) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=(side, side), mode="nearest")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--keys", nargs="+", required=True, help="emoji keys (file stems)")
    ap.add_argument("--style", default="twemoji")
    ap.add_argument("--pairs", nargs="*", default=[], help="KEY:KEY walks")
    ap.add_argument("--k", type=int, default=5, help="variations per image")
    ap.add_argument("--frames", type=int, default=7)
    ap.add_argument("--out", required=True, help="prefix: PREFIX_variations.png, PREFIX_walk.png")
    args = ap.parse_args()
    pipe = t2i.load(args.model)
    rows = []
    for key in args.keys:
        image = real_image(args.data, key, args.style)
        rows.append(torch.cat([image, pipe.variations(image, n=args.k, seed=0)]))
    grid = image_grid(enlarge(torch.cat(rows)), cols=args.k + 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(f"{args.out}_variations.png")
    walks = []
    for pair in args.pairs:
        a, b = (real_image(args.data, key, args.style) for key in pair.split(":"))
        frames = pipe.interpolate_images(a, b, frames=args.frames, seed=0)
        walks.append(torch.cat([a, frames, b]))
    if walks:
        image_grid(enlarge(torch.cat(walks)), cols=args.frames + 2).save(f"{args.out}_walk.png")
    print(f"{args.out}_variations.png", f"{args.out}_walk.png" if walks else "")


if __name__ == "__main__":
    main()
