"""AlignDRAW's blurry samples sharpened by a second stage: the same data's diffusion model redraws
each one by img2img (SDEdit) at a strength, with the same prompt. Strength 0 is AlignDRAW alone;
strength 1 is the diffusion model alone (the AlignDRAW image forgotten). Every row is judged by
the data's own suite (`t2i eval`'s: the fashion classifier, or the exact shapes judge), on the
same prompts and seeds.

The paper sharpened with an adversarial network trained on its own samples; this stage is not
trained on AlignDRAW's output, so it is a measurement of how much a diffusion refiner keeps of
the layout AlignDRAW drew (the prompt accuracy at low strength is still mostly AlignDRAW's) and
how much of the texture it adds (FD), not a new model.

    python3 experiments/draw_sharpen.py runs/draw_fashion/model fashion --data fashion \
        --strengths 0,0.3,0.5,0.7,1 --n 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

import t2i
from t2i.evaluation.evaluate import generate_batched
from t2i.evaluation.suites import SUITES, EvalConfig, suite_for
from t2i.images import to_pil


@torch.no_grad()
def refined(refiner, images: torch.Tensor, prompts: list[str], strength: float, seed: int):
    """Each image redrawn from its own PNG by img2img at `strength`, seed + i."""
    if strength == 0:
        return images
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (image, prompt) in enumerate(zip(to_pil(images), prompts)):
            path = Path(tmp) / f"{i}.png"
            image.save(path)
            p = refiner.params(prompt, init=str(path), strength=strength, seed=seed + i)
            out.append(refiner.generate(p, 1))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("draw", help="an AlignDRAW model folder")
    ap.add_argument("refiner", help="a diffusion model of the same data (bundled name or folder)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--strengths", default="0,0.3,0.5,0.7,1")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    draw, refiner = t2i.load(args.draw), t2i.load(args.refiner)
    cfg = EvalConfig(data=args.data, n=args.n, seed=args.seed, heldout=False)
    params = draw.params("", seed=args.seed)
    cache: dict[tuple, torch.Tensor] = {}

    def drawn(prompts: list[str]) -> torch.Tensor:
        key = tuple(prompts)
        if key not in cache:
            cache[key] = generate_batched(draw, prompts, replace(params), 50)[0]
        return cache[key]

    rows = []
    for strength in (float(s) for s in args.strengths.split(",")):
        gen = lambda prompts, s=strength: refined(refiner, drawn(prompts), prompts, s, args.seed)  # noqa: E731
        metrics = SUITES[suite_for(args.data)](cfg, gen, draw.image_size)[0]
        row = {"strength": strength, **{k: m["value"] for k, m in metrics.items()}}
        for k, m in metrics.items():
            if "per_category" in m:
                row[k + "_per_category"] = m["per_category"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
