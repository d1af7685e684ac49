"""Bits per dimension of the bundled `fashion` model on Fashion-MNIST test images given their
captions (t2i/likelihood.py): the variational bound with the model's fixed reverse variances,
estimated from sampled timesteps, and the exact sum over all 1,000.

    python3 experiments/fashion_bpd.py --images 200 --samples 32 [--exact]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import t2i
from t2i.data import load_dataset
from t2i.likelihood import bits_per_dim
from t2i.schedules import DiscreteSchedule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--samples", type=int, default=32, help="timesteps drawn per image")
    ap.add_argument("--exact", action="store_true", help="also sum over all timesteps")
    args = ap.parse_args()
    pipe = t2i.load("fashion")
    data = load_dataset("fashion", image_size=32, split="test")
    items = [data[i] for i in range(args.images)]
    x0 = torch.stack([it["image"] for it in items])
    cond = pipe.encode_text([it["caption"] for it in items])
    betas = DiscreteSchedule.from_dict(pipe.index["schedule"]).betas()
    out = {"images": args.images}
    for variance in ("small", "large"):
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(0)
        bound = bits_per_dim(
            pipe.denoiser,
            x0,
            betas,
            samples=args.samples,
            generator=gen,
            variance=variance,
            cond=cond,
        )
        out[f"{variance}_sampled"] = [round(bound.bits_per_dim, 4), round(bound.stderr, 4)]
        out[f"{variance}_seconds"] = round(time.perf_counter() - start, 1)
        if args.exact:
            gen = torch.Generator().manual_seed(0)
            bound = bits_per_dim(
                pipe.denoiser, x0, betas, generator=gen, variance=variance, cond=cond
            )
            out[f"{variance}_exact"] = [round(bound.bits_per_dim, 4), round(bound.stderr, 4)]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
