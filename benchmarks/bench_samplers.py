"""Samplers: convergence on an exact case, and each sampler's own overhead per step.

1. Convergence: the exact denoiser of the 1-D mixture 0.3 N(-2.8, 0.5^2) + 0.7 N(1.2, 0.5^2); every
   sampler draws N samples from the same initial noise; the error is the Wasserstein-1 distance
   between the samples and the exact mixture (Monte Carlo floor ~0.005 at N = 50000). Deterministic
   solvers also get their ODE error: mean |x - x_ref| at sigma_min = 0.05 against a 2048-step Heun
   solution, and its ratio as the steps double (2 = first order, 4 = second order).
2. Overhead: seconds per step of each sampler driving a zero-cost model (returns x), against one
   forward pass of t2i's small UNet at the same shape; repetitions interleaved, medians.

    python3 benchmarks/bench_samplers.py            # both parts (about a minute)
    python3 benchmarks/bench_samplers.py --part convergence
    python3 benchmarks/bench_samplers.py --part overhead --threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from functools import partial

import torch

from t2i.denoisers import GaussianMixtureDenoiser
from t2i.samplers import SAMPLERS, get_sampler, sigmas_for
from t2i.schedules import DiscreteSchedule, sigmas_karras

MIX = GaussianMixtureDenoiser(
    torch.tensor([[-2.8], [1.2]]), torch.tensor([0.5, 0.5]), torch.tensor([0.3, 0.7])
)
STEPS = (5, 10, 20, 50, 100, 200)
DISCRETE = {"ddim", "ddpm"}  # run on a DDPM model's own discrete sigmas (linear betas, trailing)


def mixture_cdf(x: torch.Tensor) -> torch.Tensor:
    phi = lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # noqa: E731
    return 0.3 * phi((x + 2.8) / 0.5) + 0.7 * phi((x - 1.2) / 0.5)


def w1(samples: torch.Tensor, cdf=mixture_cdf) -> float:
    """Wasserstein-1 distance to the exact law: integral of |F_n - F| on a fine grid."""
    grid = torch.linspace(-8, 8, 8001, dtype=torch.float64)
    s = samples.flatten().double().sort().values
    f_n = torch.searchsorted(s, grid, right=True).double() / len(s)
    return ((f_n - cdf(grid)).abs().sum() * (grid[1] - grid[0])).item()


def sigmas_of(name: str, steps: int) -> torch.Tensor:
    if name in DISCRETE:
        return sigmas_for(DiscreteSchedule.preset("ddpm"), steps, "discrete", "trailing")
    return sigmas_karras(steps, 0.002, 80.0)


def convergence(n: int) -> None:
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest
    noise = torch.randn(n, 1, generator=torch.Generator().manual_seed(0))
    print(f"W1 distance to the mixture, N = {n} samples (exact samples: {w1_floor(n)})\n")
    print("| sampler | " + " | ".join(f"{s} steps" for s in STEPS) + " |")
    print("|---|" + "---|" * len(STEPS))
    for name in sorted(SAMPLERS):
        row = []
        for steps in STEPS:
            sigmas = sigmas_of(name, steps)
            g = torch.Generator().manual_seed(1)
            row.append(w1(get_sampler(name)(MIX, noise * sigmas[0], sigmas, generator=g)))
        print(f"| {name} | " + " | ".join(f"{e:.3f}" for e in row) + " |")
    lcm_consistency(n)
    ode_order()


def w1_floor(n: int) -> str:
    """W1 of n exact samples, over 8 seeds: the Monte Carlo floor of the table."""
    errs = []
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        comp = torch.rand(n, generator=g) < 0.7
        errs.append(w1(torch.where(comp, 1.2, -2.8) + 0.5 * torch.randn(n, generator=g)))
    return f"median {statistics.median(errs):.3f}, range {min(errs):.3f}-{max(errs):.3f}"


def lcm_consistency(n: int) -> None:
    """LCM is meant for consistency models: with the exact consistency function of N(1, 0.5^2)."""
    mu, s = 1.0, 0.5
    f = lambda x, sigma: mu + (x - mu) * s / (s**2 + sigma[:, None] ** 2).sqrt()  # noqa: E731
    cdf = lambda x: 0.5 * (1 + torch.erf((x - mu) / (s * math.sqrt(2))))  # noqa: E731
    row = []
    for steps in (1, 2, 4, 8):
        sigmas = sigmas_karras(steps, 0.5, 80.0) if steps > 1 else torch.tensor([80.0, 0.0])
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 1, generator=g) * 80.0
        row.append(w1(get_sampler("lcm")(f, x, sigmas, generator=g), cdf))
    print(
        "\nLCM with the exact consistency function of N(1, 0.5^2), W1 at 1/2/4/8 steps: "
        + " / ".join(f"{e:.3f}" for e in row)
    )


def ode_order() -> None:
    x = torch.randn(2000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sig = lambda k: sigmas_karras(k + 1, 0.05, 20.0).double()[:-1]  # noqa: E731
    ref = get_sampler("heun")(MIX, x * 20.0, sig(2048))
    steps = (8, 16, 32, 64, 128)
    print("\nODE error at sigma_min = 0.05 vs 2048-step Heun (ratio as steps double)\n")
    print("| solver | " + " | ".join(f"{s}" for s in steps) + " | ratios |")
    print("|---|" + "---|" * (len(steps) + 1))
    for name in ("euler", "ddim", "heun", "dpmpp_2m"):
        errs = [(get_sampler(name)(MIX, x * 20.0, sig(k)) - ref).abs().mean().item() for k in steps]
        ratios = " ".join(f"{a / b:.2f}" for a, b in zip(errs, errs[1:]))
        print(f"| {name} | " + " | ".join(f"{e:.1e}" for e in errs) + f" | {ratios} |")


def median_time(fn, reps: int) -> list[float]:
    fn()  # warm up
    return [timed(fn) for _ in range(reps)]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def overhead(reps: int, steps: int) -> None:
    from t2i.models.unet import UNet, UNetConfig

    zero_cost = lambda x, sigma, **kw: x  # noqa: E731
    cases = [
        ("latent 4x16x16, batch 2", (2, 4, 16, 16)),
        ("pixels 3x64x64, batch 2", (2, 3, 64, 64)),
    ]
    print(f"\nthreads: {torch.get_num_threads()}, {steps} steps per run, {reps} interleaved reps")
    for label, shape in cases:
        net = UNet(UNetConfig.preset("small", in_channels=shape[1])).eval()
        ctx = torch.randn(shape[0], 16, net.config.context_dim)
        x = torch.randn(shape)
        t = torch.full((shape[0],), 500.0)
        fns = {"unet": partial(net, x, t, context=ctx)}
        sig = sigmas_karras(steps, 0.002, 80.0)
        for name in sorted(SAMPLERS):
            gens = [torch.Generator().manual_seed(i) for i in range(shape[0])]
            fns[name] = partial(get_sampler(name), zero_cost, x, sig, generator=gens)
        times = {k: [] for k in fns}
        with torch.no_grad():
            for f in fns.values():
                f()
            for _ in range(reps):
                for k, f in fns.items():
                    times[k].append(timed(f))
        unet = statistics.median(times["unet"])
        print(f"\n{label}: small UNet forward {unet * 1e3:.1f} ms\n")
        print("| sampler | overhead per step | % of a UNet forward |")
        print("|---|---|---|")
        for name in sorted(SAMPLERS):
            per_step = statistics.median(times[name]) / steps
            print(f"| {name} | {per_step * 1e6:.0f} us | {100 * per_step / unet:.2f}% |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", choices=["all", "convergence", "overhead"], default="all")
    p.add_argument("--n", type=int, default=50000, help="samples for the convergence table")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--steps", type=int, default=50, help="steps per timed overhead run")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the overhead part")
    a = p.parse_args()
    if a.part in ("all", "convergence"):
        convergence(a.n)
    if a.part in ("all", "overhead"):
        torch.set_num_threads(a.threads)
        overhead(a.reps, a.steps)


if __name__ == "__main__":
    main()
