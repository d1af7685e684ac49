"""Guidance per stage of a cascade: `t2i eval`'s figures for each (base guidance, last guidance).

A cascade's base stages run with their own default guidance (model_index.json "sampler"), the
last stage with the one asked for; this sweeps both on the same prompts and seeds, so the defaults
written into a cascade's cards are measured, not guessed. The base's base (a 1-pixel stage) keeps
its own default throughout.

    python3 benchmarks/cascade_guidance.py CASCADE --data shapes --n 50 --base 1.5,3,5 --last 3
"""

from __future__ import annotations

import argparse

import torch

from t2i.evaluation.evaluate import EvalConfig, evaluate
from t2i.pipeline import Pipeline


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cascade", help="a cascade model folder (model_index.json with 'base')")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--base", type=floats, default=[3.0], help="the base stage's guidance values")
    ap.add_argument("--last", type=floats, default=[3.0], help="the last stage's guidance values")
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (t2i eval runs fp32)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = Pipeline.from_pretrained(args.cascade, bf16=args.bf16)
    if pipe.base is None:
        raise SystemExit(f"{args.cascade} is not a cascade (its model_index.json has no 'base')")
    metric = "compositional_accuracy_fixed" if args.data == "shapes" else None
    print(f"{args.cascade}, n = {args.n}, seed 0, {'bf16' if args.bf16 else 'fp32'}")
    print("| base guidance | last guidance | headline | per category |")
    print("|---|---|---|---|")
    for base in args.base:
        pipe.base.defaults["guidance_scale"] = base
        for last in args.last:
            cfg = EvalConfig(args.data, args.n, guidance=last, heldout=False, grid=0)
            cfg.batch_size = args.batch_size
            report = evaluate(args.cascade, cfg, out_dir=None, pipeline=pipe)
            name = metric or next(iter(report["metrics"]))
            m = report["metrics"][name]
            per = m.get("per_category", {})
            detail = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items()))
            print(f"| {base} | {last} | {m['value']:.2f} | {detail} |", flush=True)


if __name__ == "__main__":
    main()
