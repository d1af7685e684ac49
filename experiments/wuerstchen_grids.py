"""A probe of the Würstchen-style emoji model: the semantic grids of 8 held-out images against
the grids stage C draws for their captions (mean, std, the share of values beyond 0.95 of the
tanh's range), and one sheet: the real images, stage B's redrawing of each from its own grid
(with its caption), and the whole model's image of the caption (seeds 0-7).

    OMP_NUM_THREADS=1 python3 experiments/wuerstchen_grids.py runs/wu/c/model \\
        --data data_cache/emoji64 --out docs/training/wuerstchen/real_redrawn_generated.png
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

import t2i
from t2i.data import load_dataset
from t2i.images import image_grid


def stats(name: str, grid: torch.Tensor) -> None:
    saturated = (grid.abs() > 0.95).float().mean()
    print(f"{name}: mean {grid.mean():.3f} std {grid.std():.3f} beyond 0.95 {saturated:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--data", default="data_cache/emoji64")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pipe = t2i.load(args.model)
    held = load_dataset(args.data, image_size=64, split="heldout")
    items = [held[i] for i in range(0, len(held), len(held) // 8)][:8]
    images = torch.stack([it["image"] for it in items])
    captions = [it["caption"] for it in items]
    real = pipe.semantic_grid(images)
    stats("real grids", real)
    redrawn = pipe.reconstruct(images, captions, 0)
    small = pipe.base_params(pipe.params(captions[0], seed=0))
    drawn = pipe.base.generate_items(
        [replace(small, prompt=c, seed=i) for i, c in enumerate(captions)]
    )
    stats("stage C grids", drawn)
    generated = pipe.draw_from(
        pipe.params(captions[0]), list(range(8)), pipe.encode_text(captions), drawn
    )
    image_grid(torch.cat([images, redrawn, generated]), cols=8).save(args.out)
    print(captions)


if __name__ == "__main__":
    main()
