"""Condition fidelity of spatial controls: how well a generated image follows its condition.

For n held-out real images, the condition (edges, sketch or layout) is made from the image and
the image's caption is the prompt; the model draws the prompt without a control and with each
control given. The condition is then extracted back from each generated image and compared with
the one given: edges and sketches by the F1 of edge pixels within one pixel
(t2i.data.conditions.edge_f1), layouts by the IoU of each object's mask within its cell and of
the whole mask (layout_iou). Beside them: the real image itself (the ceiling) and another real
image of the set (what a condition shares with an unrelated image: the floor).

On `shapes` the exact judge also scores each image against its prompt (every fact, position),
and a mismatched run gives each prompt the layout of the next scene: the judge says whether the
prompt won, the IoU whether the layout did.

    python benchmarks/bench_control.py --model shapes --data shapes --kind layout \
        --control runs/control/shapes_layout_controlnet/model/layout \
        --control runs/control/shapes_layout_t2i_adapter/model/layout-adapter --n 200
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import t2i
from t2i.adapters.control import draw_conditioned
from t2i.data import load_dataset
from t2i.data.conditions import condition, edge_f1, edges, layout_iou
from t2i.data.judge import accuracy, judge


def real_items(data: str, n: int, size: int) -> list[dict]:
    """n held-out items {"image", "caption"[, "scene"]} (shapes: the test split of seed 1234;
    a folder: its held-out split, as `t2i eval`)."""
    name = data.partition(":")[0]
    seed = 1234 if name == "shapes" else 0
    split = "test" if name in ("shapes", "fashion") else "heldout"
    ds = load_dataset(data, image_size=size, split=split, seed=seed, length=max(n, 1))
    idx = np.random.default_rng(0).permutation(len(ds))[:n] if name != "shapes" else range(n)
    return [ds[int(i)] for i in idx]


def fidelity(kind: str, images: torch.Tensor, items: list[dict], hints: torch.Tensor) -> dict:
    """Mean fidelity of images[i] to the condition hints[i] made from items[i]."""
    if kind == "layout":
        scores = np.array([layout_iou(im, it["scene"]) for im, it in zip(images, items)])
        return {"object_iou": float(scores[:, 0].mean()), "mask_iou": float(scores[:, 1].mean())}
    f1 = [edge_f1(edges(im), h) for im, h in zip(images, hints)]
    return {"edge_f1": float(np.mean(f1))}


def judged(images: torch.Tensor, prompts: list[str]) -> dict:
    acc = accuracy([judge(im, p) for im, p in zip(images, prompts)])
    return {"all_facts": acc["all"], "position": acc.get("position", float("nan"))}


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="shapes")
    # no default from the model's card: a fine-tune's data (shapes:crowded, fashion:varied) is
    # not the set its controls are scored on
    ap.add_argument(
        "--data",
        required=True,
        help="the set whose held-out images give the conditions: "
        "shapes, fashion or an image folder",
    )
    ap.add_argument("--kind", required=True, choices=["edges", "sketch", "layout"])
    ap.add_argument("--control", action="append", default=[], help="control folder; repeatable")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--scale", type=float, default=1.0, help="each control's scale")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = t2i.load(args.model)
    data = args.data
    items = real_items(data, args.n, pipe.image_size)
    prompts = [it["caption"] for it in items]
    hints = torch.stack([condition(args.kind, it, seed=i) for i, it in enumerate(items)])
    reals = torch.stack([it["image"] for it in items])
    rows = {
        "real image": fidelity(args.kind, reals, items, hints),
        "another real image": fidelity(args.kind, reals.roll(1, 0), items, hints),
    }
    # own names: a folder may share a name with the model's own controls
    names = [pipe.load_control(folder, f"given{k}") for k, folder in enumerate(args.control)]

    def draw(nets, conds, prompts_=prompts):
        out = []
        for lo in range(0, len(prompts_), args.batch):
            hi = min(lo + args.batch, len(prompts_))
            part = [h[lo:hi] for h in conds]
            scales = [args.scale] * len(nets)
            out.append(draw_conditioned(pipe, nets, part, prompts_[lo:hi], range(lo, hi), scales))
        return torch.cat(out)

    made, seconds = timed(draw, [], [])
    rows["no control"] = {
        **fidelity(args.kind, made, items, hints),
        "s_per_image": seconds / args.n,
    }
    if args.kind == "layout":
        rows["real image"].update(judged(reals, prompts))
        rows["no control"].update(judged(made, prompts))
    for name in names:
        control = pipe.controls.get(name)
        made, seconds = timed(draw, [control.net], [hints])
        row = {**fidelity(args.kind, made, items, hints), "s_per_image": seconds / args.n}
        row["params"] = sum(p.numel() for p in control.net.parameters())
        if args.kind == "layout":
            row.update(judged(made, prompts))
            crossed = draw([control.net], [hints.roll(-1, 0)])  # the next scene's layout
            other = [{"scene": it["scene"]} for it in items[1:] + items[:1]]
            iou = np.mean([layout_iou(im, o["scene"])[1] for im, o in zip(crossed, other)])
            row["mismatched"] = {**judged(crossed, prompts), "mask_iou_to_layout": float(iou)}
        label = f"{control.meta['name']} ({control.meta['arch']}, {row['params'] / 1e6:.2f} M)"
        rows[label if label not in rows else f"{label} #{len(rows)}"] = row
    result = {"model": args.model, "data": data, "kind": args.kind, "n": args.n}
    result.update(scale=args.scale, rows=rows)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
