"""Does a consistency student sample better if each step keeps part of its own noise estimate?
Multistep LCM sampling re-noises the x0 jump with fresh noise to the next sigma. TCD's
"strategic stochastic sampling" (Zheng et al. 2024) instead steps deterministically (DDIM with
the student's x0 and eps = (x - x0) / sigma) down to sigma_mid = (1 - gamma) * sigma_next and adds
fresh noise only from there: gamma 1 is LCM's sampler, gamma 0 deterministic. This swaps the
`lcm` sampler for that family and runs `t2i eval` on the same prompts and seeds:

    python3 experiments/lcm_gamma_probe.py shapes-lcm --data shapes --n 1000 --gammas 1 0.5 0.2 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import t2i.samplers as samplers
from t2i.cli import main as t2i_main


def sample_lcm_gamma(gamma: float):
    @torch.no_grad()
    def sample(model, x, sigmas, extra_args=None, callback=None, generator=None):
        sigmas, extra_args = samplers._check(x, sigmas, extra_args, generator)
        for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
            denoised = samplers._denoise(model, x, sigma, extra_args)
            eps = (x - denoised) / sigma
            mid = (1 - gamma) * sigma_next
            x = denoised + eps * mid
            if sigma_next > mid:
                noise = samplers.randn_like_per_item(x, generator)
                x = x + noise * float(sigma_next**2 - mid**2) ** 0.5
            samplers._report(callback, i, x, sigma, sigma_next, denoised)
        return x

    return sample


def run(model: str, data: str, n: int, steps: int, gamma: float, out: Path) -> dict:
    samplers.SAMPLERS["lcm"] = sample_lcm_gamma(gamma)
    t2i_main(
        ["eval", model, "--data", data, "--n", str(n), "--seed", "0", "--batch-size", "50"]
        + ["--steps", str(steps), "--out", str(out), "--quiet"]
    )
    return json.loads((out / "report.json").read_text())["metrics"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--gammas", nargs="+", type=float, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for k, gamma in enumerate(args.gammas):
            metrics = run(args.model, args.data, args.n, args.steps, gamma, Path(tmp) / str(k))
            brief = {m: v.get("value") for m, v in metrics.items()}
            print(json.dumps({"gamma": gamma, "steps": args.steps, **brief}), flush=True)


if __name__ == "__main__":
    main()
