"""Time per image with and without spatial controls, through the public path (`pipe.generate`
with `controls=`), at batch 1 and 8, the model's default sampler settings; ratios in one run.

    python benchmarks/bench_control_speed.py --model shapes \
        --control t2i/bundled/shapes/controls/layout --repeats 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timing import median_seconds  # benchmarks/timing.py, beside this script

import t2i


def seconds_per_image(pipe, p, n: int, repeats: int) -> float:
    """Median over `repeats` calls of n images (after one warm-up call), per image."""
    return median_seconds(lambda: pipe.generate(p, n), repeats) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--control", action="append", default=[], help="control folder; repeatable")
    ap.add_argument("--prompt", default="a red circle above a blue square")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    pipe = t2i.load(args.model)
    side = pipe.image_size
    hint = Path(tempfile.mkdtemp()) / "hint.png"
    grid = np.zeros((side, side), np.uint8)
    grid[side // 4 : 3 * side // 4, side // 4] = 255  # any map: the cost does not depend on it
    Image.fromarray(grid).save(hint)
    rows = {"no control": pipe.params(args.prompt)}
    for k, folder in enumerate(args.control):  # own names: a folder may be the model's own
        name = pipe.load_control(folder, f"given{k}")
        meta = pipe.controls.get(name).meta
        label = f"{meta['name']} ({meta['arch']})"
        rows[label] = pipe.params(args.prompt, controls=[(name, str(hint))])
    base = {}
    print(f"{args.model}, {torch.get_num_threads()} threads, s / image (ratio to no control)")
    for label, p in rows.items():
        cells = []
        for n in (1, 8):
            s = seconds_per_image(pipe, p, n, args.repeats)
            base.setdefault(n, s)
            cells.append(f"batch {n}: {s:.4f} ({s / base[n]:.2f}x)")
        print(f"  {label}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
