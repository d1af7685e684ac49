"""Likelihood against sample quality, for diffusion models trained at matched compute with
different objectives (L_simple-style, L_hybrid with learned variances, the learned schedule's
continuous-time bound):

    bits/dim   the variational bound on held-out images given their captions, summed exactly
               over every step (`t2i eval MODEL --data fashion --nll 100`), per reverse variance
    FD, acc    the fashion suite (the evaluation classifier's features and labels) on N images
               drawn by DDPM ancestral sampling at each step count, CFG at the card's scale;
               a learned-variance model samples with its own variance

    python3 benchmarks/bench_likelihood.py --model simple=runs/lik_simple/model \\
        --model hybrid=runs/lik_hybrid/model --model vdm=runs/lik_vdm/model \\
        --nll 100 --n 300 --steps 10,25,100 --out runs/bench_likelihood

One JSON row per model and measurement is appended to OUT/results.jsonl as it is made (a
stopped run keeps what it measured; --skip-done continues it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from t2i.evaluation.evaluate import EvalConfig, evaluate
from t2i.evaluation.likelihood import likelihood_report
from t2i.families import load


def done_rows(path: Path) -> set[tuple]:
    if not path.is_file():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["label"], r["measure"], r.get("steps")) for r in rows}


def measure(label: str, folder: str, args, out: Path) -> None:
    results, done = out / "results.jsonl", done_rows(out / "results.jsonl")
    pipe = load(folder)

    def write(row: dict) -> None:
        with results.open("a") as f:
            f.write(json.dumps({"label": label, "model": folder, **row}) + "\n")
        print(json.dumps(row), flush=True)

    if args.nll and (label, "nll", None) not in done:
        write({"measure": "nll", **likelihood_report(pipe, args.data, args.nll)})
    for steps in args.steps:
        if (label, "samples", steps) in done:
            continue
        cfg = EvalConfig(data=args.data, n=args.n, sampler="ddpm", steps=steps, grid=16)
        cfg.batch_size = args.batch_size
        start = time.perf_counter()
        report = evaluate(folder, cfg, out_dir=out / f"{label}-ddpm{steps}", pipeline=pipe)
        metrics = {k: m["value"] for k, m in report["metrics"].items()}
        seconds = round(time.perf_counter() - start, 1)
        write(
            {
                "measure": "samples",
                "steps": steps,
                "guidance": report["guidance"],
                **metrics,
                "seconds": seconds,
            }
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="LABEL=FOLDER, repeatable")
    ap.add_argument("--data", default="fashion")
    ap.add_argument("--nll", type=int, default=100, help="held-out images for the bound (0: none)")
    ap.add_argument("--n", type=int, default=300, help="generated images per step count")
    ap.add_argument("--steps", default="10,25,100", help="DDPM step counts, a comma list")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--out", default="runs/bench_likelihood")
    args = ap.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in args.model:
        label, _, folder = spec.partition("=")
        measure(label, folder, args, out)


if __name__ == "__main__":
    main()
