"""How well does a shapes cascade's grid-sized first stage lay the scene out? Judged on its own.

A base model that draws the scene at 3x3 px (one pixel per cell of the shapes grid) is judged by
t2i.data.cell_judge on the prompts of `t2i eval --data shapes` (the fixed set, seed i for prompt
i): count, colour, size, position and background (shapes are not visible at 3x3), overall and by
number of objects, once per guidance scale asked. The first row judges the real scenes shrunk to
3x3 (the judge is exact on them: 1.00).

    python3 experiments/layout_stage.py MODEL --n 100 --guidance 1,3,5

MODEL: a 3 px model folder, or a cascade with one among its stages. A layout stage that is
itself an upscaler (from the image's mean colour, 1 px) is also judged from the real mean colour.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from t2i.cascade import CascadePipeline
from t2i.data.cell_judge import CELL_CATEGORIES, judge_cells
from t2i.data.shapes import GRID
from t2i.families import load
from t2i.images import shrink
from t2i.protocol import Generator

# the prompts, seeds and table layout of benchmarks/cascade_stages.py, so the rows compare
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from cascade_stages import eval_scenes, floats, table_row  # noqa: E402


def layouts(pipe: Generator, prompts: list[str], guidance: float, steps, batch: int, low=None):
    """The model's GRID x GRID images of the prompts, prompt i from seed i; `low` (N, 3, h, w):
    the small images its own base would draw (a layout stage that is itself an upscaler)."""
    out = []
    for k in range(0, len(prompts), batch):
        part = prompts[k : k + batch]
        items = [
            pipe.params(p, seed=k + j, guidance=guidance, steps=steps) for j, p in enumerate(part)
        ]
        if low is None:
            out.append(pipe.generate_items(items))
        else:
            cond, seeds = pipe.encode_text(part), [it.seed for it in items]
            out.append(pipe.draw_from(items[0], seeds, cond, low[k : k + batch]))
    return torch.cat(out)


def row(label: str, images: torch.Tensor, prompts: list[str], counts: list[int]) -> str:
    verdicts = [judge_cells(im, p) for im, p in zip(images, prompts)]
    return table_row(label, verdicts, counts, CELL_CATEGORIES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a 3 px model folder, or a cascade whose base is one")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--guidance", type=floats, default=[3.0])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load(args.model)
    while pipe.image_size != GRID and isinstance(pipe, CascadePipeline) and pipe.base:
        pipe = pipe.base
    if pipe.image_size != GRID:
        raise SystemExit(f"{args.model}: draws {pipe.image_size} px, the cell judge reads {GRID}")
    prompts, reals, counts = eval_scenes(args.n)
    print(f"{args.model}: n = {args.n} fixed prompts, seed i for prompt i, fp32")
    print("| layouts | all facts | by objects | " + " | ".join(CELL_CATEGORIES) + " |")
    print("|---" * (len(CELL_CATEGORIES) + 3) + "|")
    print(row("real scenes shrunk", shrink(reals, (GRID, GRID)), prompts, counts), flush=True)
    sampler = f"{pipe.defaults['name']} {args.steps or pipe.defaults['steps']}"
    for g in args.guidance:
        if pipe.base is not None:  # drawn from the real scene's own small image (its ceiling)
            low = shrink(reals, (pipe.index["low_res"],) * 2)
            images = layouts(pipe, prompts, g, args.steps, args.batch_size, low)
            label = f"guidance {g}, {sampler}, from the true {low.shape[-1]} px"
            print(row(label, images, prompts, counts), flush=True)
        images = layouts(pipe, prompts, g, args.steps, args.batch_size)
        label = f"guidance {g}, {sampler}" + (", every stage generated" if pipe.base else "")
        print(row(label, images, prompts, counts), flush=True)


if __name__ == "__main__":
    main()
