"""Which part of a learned-variance model makes its few-step DDPM samples what they are: the
mean (DDIM, no noise), or the variance (DDPM with beta~, beta, or the model's own), on the same
prompts and seeds, for each model folder given (the fashion suite judges).

    python3 experiments/hybrid_variance_probe.py runs/lik_simple/model runs/lik_hybrid/model \\
        --steps 10 --n 300
"""

from __future__ import annotations

import argparse
import json
from functools import partial

from t2i.evaluation.evaluate import EvalConfig, evaluate
from t2i.families import load
from t2i.samplers import SAMPLERS, sample_ddpm

VARIANTS = {
    "ddim": None,
    "ddpm_small": partial(sample_ddpm, variance="beta_tilde"),
    "ddpm_large": partial(sample_ddpm, variance="beta"),
    "ddpm": None,  # the model's own variance where it learns one, else beta~
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    for name, fn in VARIANTS.items():
        if fn is not None:
            SAMPLERS[name] = fn
    for folder in args.models:
        pipe = load(folder)
        for sampler in VARIANTS:
            cfg = EvalConfig(data="fashion", n=args.n, sampler=sampler, steps=args.steps, grid=0)
            cfg.batch_size = 50
            report = evaluate(folder, cfg, pipeline=pipe)
            metrics = {k: m["value"] for k, m in report["metrics"].items()}
            print(json.dumps({"model": folder, "sampler": sampler, **metrics}), flush=True)


if __name__ == "__main__":
    main()
