"""Judge an autoregressive shapes model by number of objects, across sampling settings.

    python3 experiments/autoregressive_shapes.py MODEL --n 50 --bf16 \
        --settings 3:1.0:0 3:0.5:5 [--grid grid.png]

Each setting is guidance:temperature:top_k. The fixed prompts of `t2i eval` (seed i for prompt i)
go through the model's own TokenPipeline; every image is judged against its caption, and the share
of images entirely right is given overall and for scenes of 1, 2 and 3 objects (the compositional
part of the task is the second and third object). `t2i eval` gives the same overall figure for the
model's default setting; this adds the breakdown and the sampling settings.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

import t2i
from t2i.data.judge import accuracy, judge
from t2i.data.shapes import parse_caption, shapes_eval_prompts
from t2i.evaluation.evaluate import image_grid


def evaluate(pipe, prompts: list[str], setting: str, batch: int) -> tuple[list, object]:
    guidance, temperature, top_k = setting.split(":")
    pipe.temperature, pipe.top_k = float(temperature), int(top_k)
    params = pipe.params("", guidance=float(guidance))
    images = []
    for start in range(0, len(prompts), batch):
        items = [
            replace(params, prompt=p, seed=start + i)
            for i, p in enumerate(prompts[start : start + batch])
        ]
        images.append(pipe.generate_items(items))
    images = torch.cat(images)
    return [judge(im, p) for im, p in zip(images, prompts)], images


def by_objects(verdicts, prompts) -> dict[int, float]:
    groups: dict[int, list[bool]] = {}
    for v, p in zip(verdicts, prompts):
        groups.setdefault(len(parse_caption(p).objects), []).append(v.ok)
    return {k: round(sum(g) / len(g), 2) for k, g in sorted(groups.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--settings", nargs="+", default=["3:1.0:0"])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--grid", help="PNG of the first setting's first 24 images")
    args = parser.parse_args()
    pipe = t2i.load(args.model, bf16=args.bf16)
    prompts = shapes_eval_prompts(args.n)
    print(
        "| guidance:temperature:top_k | all facts | by objects 1 / 2 / 3 | count | colour | "
        "shape | binding | size | position | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, setting in enumerate(args.settings):
        t0 = time.perf_counter()
        verdicts, images = evaluate(pipe, prompts, setting, args.batch)
        acc, objs = accuracy(verdicts), by_objects(verdicts, prompts)
        cats = " | ".join(
            f"{acc[c]:.2f}" for c in ("count", "colour", "shape", "binding", "size", "position")
        )
        split = " / ".join(f"{v:.2f}" for v in objs.values())
        took = time.perf_counter() - t0
        print(f"| {setting} | {acc['all']:.2f} | {split} | {cats} | {took:.0f} |")
        if k == 0 and args.grid:
            image_grid(images[:24], cols=8).save(args.grid)
            with open(args.grid.removesuffix(".png") + ".txt", "w") as f:
                f.write("\n".join(prompts[:24]) + "\n")


if __name__ == "__main__":
    main()
