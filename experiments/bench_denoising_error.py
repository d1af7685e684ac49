"""Denoising error by noise level: how well each model folder predicts clean test images.

For real test images x0 (the data's `test` split, never trained on) and fixed noise, each model's
denoiser D(x0 + sigma * eps, sigma) is compared with x0: the mean squared error per pixel ([-1, 1]
scale) at each sigma, beside the error of the noisy input itself and of the best constant (the
image variance). This separates what a parameterisation learns at each noise level: e.g. on
`shapes` with a 4x4 patch stem, v-prediction leaves much of the input noise in at low sigma (so
its samples stay noisy), x0-prediction does not.

    python3 experiments/bench_denoising_error.py MODEL [MODEL ...] --data shapes --n 64

`--text-ablation`: per model, the same error with the true caption, with its position words
swapped (left <-> right, top <-> bottom, above <-> below) and with no caption. Where the swapped
caption predicts no worse than the true one, the model does not use position words at that sigma;
where the empty caption does no worse, it does not use the text at all.

    python3 experiments/bench_denoising_error.py MODEL [MODEL ...] --data shapes --text-ablation
"""

from __future__ import annotations

import argparse
import re

import torch

import t2i
from t2i.data import load_dataset

SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 80.0)


@torch.no_grad()
def denoising_mse(pipe, x0: torch.Tensor, captions: list[str], sigma: float, batch: int = 32):
    """Mean squared error of the conditional denoiser at `sigma` (noise seeded by sigma)."""
    gen = torch.Generator().manual_seed(int(sigma * 1000))
    noise = torch.randn(x0.shape, generator=gen)
    total = 0.0
    for i in range(0, len(x0), batch):
        xb, nb = x0[i : i + batch], noise[i : i + batch]
        cond = pipe.encode_text(captions[i : i + batch])
        pred = pipe.denoiser(xb + sigma * nb, torch.full((len(xb),), sigma), **cond)
        total += (pred - xb).pow(2).sum().item()
    return total / x0.numel()


SWAPS = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
SWAPS |= {"above": "below", "below": "above"}


def swap_positions(caption: str) -> str:
    """The caption with every position word replaced by its opposite."""
    return re.sub(r"\b(" + "|".join(SWAPS) + r")\b", lambda m: SWAPS[m.group(1)], caption)


def text_ablation(pipes: dict, x0: torch.Tensor, captions: list[str]) -> None:
    variants = {
        "true caption": captions,
        "positions swapped": [swap_positions(c) for c in captions],
        "no caption": [""] * len(captions),
    }
    changed = sum(c != s for c, s in zip(captions, variants["positions swapped"]))
    print(f"{changed} of {len(captions)} captions state a position\n")
    for name, pipe in pipes.items():
        print(f"{name}\n\n| sigma | " + " | ".join(variants) + " | swapped / true |")
        print("|---" * (len(variants) + 2) + "|")
        for sigma in SIGMAS:
            errs = [denoising_mse(pipe, x0, caps, sigma) for caps in variants.values()]
            cells = " | ".join(f"{e:.4f}" for e in errs)
            print(f"| {sigma:g} | {cells} | {errs[1] / errs[0]:.3f} |")
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--text-ablation", action="store_true", help="true vs altered captions")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipes = {m: t2i.load(m) for m in args.models}
    size = next(iter(pipes.values())).image_size
    data = load_dataset(args.data, image_size=size, split="test", length=args.n)
    items = [data[i] for i in range(args.n)]
    x0 = torch.stack([it["image"] for it in items]).float()
    captions = [it["caption"] for it in items]
    print(f"{args.data} test split, n = {args.n}, {size} px; MSE per pixel on the [-1, 1] scale\n")
    if args.text_ablation:
        return text_ablation(pipes, x0, captions)
    names = [f"{m} ({p.index['parameterisation']})" for m, p in pipes.items()]
    print("| sigma | noisy input | " + " | ".join(names) + " |")
    print("|---" * (2 + len(names)) + "|")
    for sigma in SIGMAS:
        errs = [denoising_mse(p, x0, captions, sigma) for p in pipes.values()]
        cells = " | ".join(f"{e:.4f}" for e in errs)
        print(f"| {sigma:g} | {sigma**2:.4g} | {cells} |")
    print(f"\nbest constant (per-pixel variance of the images): {x0.var().item():.4f}")


if __name__ == "__main__":
    main()
