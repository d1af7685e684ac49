"""A grid of spatial controls: per held-out image, its condition, the model's image without a
control, then one image per control folder given (ControlNet, T2I-Adapter), the same prompt and
seed in each row.

    python benchmarks/control_grid.py --model shapes --kind layout --n 6 \
        --control runs/control/shapes_layout_controlnet/model/layout \
        --control runs/control/shapes_layout_t2i_adapter/model/layout-adapter \
        --out docs/samples/control_shapes_layout.png
"""

from __future__ import annotations

import argparse

import torch
from PIL import ImageDraw

import t2i
from t2i.adapters.control import draw_conditioned
from t2i.data.conditions import condition
from t2i.images import image_grid
from t2i.training.grids import shorten

TILE = 96  # px each image is shown at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--kind", required=True, choices=["edges", "sketch", "layout"])
    ap.add_argument("--control", action="append", default=[], help="control folder; repeatable")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--skip", type=int, default=0, help="start at this held-out item")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from bench_control import real_items  # the benchmark's held-out items

    pipe = t2i.load(args.model)
    data = pipe.index.get("data", {}).get("source", args.model)
    items = real_items(data, args.skip + args.n, pipe.image_size)[args.skip :]
    prompts = [it["caption"] for it in items]
    hints = torch.stack([condition(args.kind, it, seed=i) for i, it in enumerate(items)])
    seeds = range(args.skip, args.skip + args.n)
    columns = [hints.expand(-1, 3, -1, -1) * 2 - 1, draw_conditioned(pipe, [], [], prompts, seeds)]
    labels = ["condition", "no control"]
    for k, folder in enumerate(args.control):  # own names: a folder may share the model's
        control = pipe.controls.get(pipe.load_control(folder, f"given{k}"))
        columns.append(draw_conditioned(pipe, [control.net], [hints], prompts, seeds))
        labels.append(f"{control.meta['name']} ({control.meta['arch']})")
    columns = [c.expand(-1, 3, -1, -1) for c in columns]
    tiles = torch.stack(columns, 1).flatten(0, 1)
    tiles = torch.nn.functional.interpolate(tiles, size=(TILE, TILE), mode="nearest")
    grid = image_grid(tiles, cols=len(columns))
    sheet = grid.crop((0, -18, grid.width + 360, grid.height))
    sheet.paste((255, 255, 255), (0, 0, sheet.width, 18))
    sheet.paste((255, 255, 255), (grid.width, 0, sheet.width, sheet.height))
    draw = ImageDraw.Draw(sheet)
    for k, label in enumerate(labels):
        draw.text((4 + k * (TILE + 2), 3), label, "black")
    for i, prompt in enumerate(prompts):
        draw.text((grid.width + 6, 18 + i * (TILE + 2) + TILE // 2 - 6), shorten(prompt), "black")
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
