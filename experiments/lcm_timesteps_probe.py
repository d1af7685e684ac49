"""Which timesteps should a 4-step consistency sampler visit? The student is trained at every point
of its 50-point grid, so any descending pick of grid points is a valid run; the shipped pick
spaces them evenly from the noisiest end (999, 759, 499, 259). This evaluates other picks on a
shipped LCM-LoRA with `t2i eval`, the same prompts and seeds:

    python3 experiments/lcm_timesteps_probe.py shapes-lcm --data shapes --n 1000 \
        --picks 999,759,499,259 999,679,379,139 999,599,299,99
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import t2i.pipeline
from t2i.cli import main as t2i_main
from t2i.schedules import lcm_grid


def run(model: str, data: str, n: int, pick: list[int], out: Path, grid_steps: int) -> dict:
    grid = set(lcm_grid(1000, grid_steps))
    if any(t not in grid for t in pick) or pick != sorted(pick, reverse=True):
        raise SystemExit(f"{pick}: every timestep must be a point of the grid, descending")
    t2i.pipeline.lcm_timesteps = lambda steps, *_: pick[:steps]
    t2i_main(
        [
            "eval",
            model,
            "--data",
            data,
            "--n",
            str(n),
            "--seed",
            "0",
            "--batch-size",
            "50",
            "--steps",
            str(len(pick)),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    return json.loads((out / "report.json").read_text())["metrics"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--picks", nargs="+", required=True, help="comma-separated timesteps")
    ap.add_argument("--grid", type=int, default=50, help="the distillation grid's points")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for k, text in enumerate(args.picks):
            pick = [int(t) for t in text.split(",")]
            metrics = run(args.model, args.data, args.n, pick, Path(tmp) / str(k), args.grid)
            figures = {name: m["value"] for name, m in metrics.items()}
            print(json.dumps({"pick": pick, **figures}), flush=True)


if __name__ == "__main__":
    main()
