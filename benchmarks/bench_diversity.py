"""Diversity per prompt: how different a model's images of one prompt are, beside real images of
that caption (mode collapse shows as a figure near 0).

For the first K distinct captions of the data (its test split where it has one), each model draws
S images (seeds 0..S-1, its own defaults); the figure is the mean RMS pixel distance between two
images of one prompt (in [-1, 1] units), averaged over the prompts. `real` is the same over up to
S real images that carry exactly that caption (prompts with fewer than two are left out of it).

    python3 benchmarks/bench_diversity.py fashion runs/gan/fashion/model --data fashion
"""

from __future__ import annotations

import argparse
import json

import torch

import t2i
from t2i.data import load_dataset
from t2i.evaluation.metrics import pairwise_rms


def captions_and_reals(data: str, k: int, s: int, size: int) -> tuple[list[str], dict]:
    try:
        ds = load_dataset(data, image_size=size, split="test")
    except ValueError:
        ds = load_dataset(data, image_size=size)
    prompts, reals = [], {}
    for i in range(len(ds)):
        item = ds[i]
        c = item["caption"]
        if c not in reals and len(prompts) < k:
            prompts.append(c)
            reals[c] = []
        if c in reals and len(reals[c]) < s:
            reals[c].append(item["image"])
        if len(prompts) == k and all(len(v) >= s for v in reals.values()):
            break
        if i > 20 * k * s:  # captions that never repeat: stop looking
            break
    return prompts, reals


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="bundled model names or model folders")
    ap.add_argument("--data", required=True, help="the data whose captions are the prompts")
    ap.add_argument("--prompts", type=int, default=20, help="K distinct captions (20)")
    ap.add_argument("--seeds", type=int, default=8, help="S images per prompt (8)")
    args = ap.parse_args()
    pipes = {m: t2i.load(m) for m in args.models}
    size = next(iter(pipes.values())).image_size
    prompts, reals = captions_and_reals(args.data, args.prompts, args.seeds, size)
    rows = {}
    for name, pipe in pipes.items():
        values = [pairwise_rms(pipe.generate(pipe.params(p, seed=0), args.seeds)) for p in prompts]
        rows[name] = sum(values) / len(values)
    real = [pairwise_rms(torch.stack(v)) for v in reals.values() if len(v) >= 2]
    rows["real"] = sum(real) / len(real) if real else None
    out = {"data": args.data, "prompts": len(prompts), "seeds": args.seeds,
           "real_prompts": len(real), "diversity": rows}  # fmt: skip
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
