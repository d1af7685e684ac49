"""The variational bound's gap to the true negative log-likelihood on data from one Gaussian
(4 dimensions, std 0.2), with its exact denoiser, for the reverse variances "small" (beta~_t),
"large" (beta_t) and the true ones, over cosine schedules of 10 to 1,000 steps, exact sums.

    python3 experiments/gaussian_bound.py        # seconds
"""

from __future__ import annotations

import json
import math

import torch

from t2i.denoisers import GaussianMixtureDenoiser
from t2i.likelihood import VPTerms, bits_per_dim, gaussian_reverse_logvar
from t2i.schedules import betas_cosine

MU, S = torch.tensor([[0.3, -0.2, 0.1, 0.0]]), 0.2


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = MU.double() + S * torch.randn(2000, 4, generator=gen, dtype=torch.float64)
    nll = (0.5 * math.log(2 * math.pi * S * S) + (x0 - MU.double()) ** 2 / (2 * S * S)).sum(1)
    nll = nll / (4 * math.log(2))
    denoiser = GaussianMixtureDenoiser(MU, torch.tensor([S]), torch.tensor([1.0]))
    for steps in (10, 20, 100, 1000):
        betas, row = betas_cosine(steps), {"steps": steps}
        for name in ("small", "large", "true"):
            variance = gaussian_reverse_logvar(VPTerms.of(betas), S) if name == "true" else name
            bound = bits_per_dim(
                denoiser,
                x0,
                betas,
                variance=variance,
                decoder="continuous",
                clip=False,
                generator=torch.Generator().manual_seed(1),
            )
            gap = bound.per_image - nll
            row[name] = [round(float(gap.mean()), 3), round(float(gap.std()) / 2000**0.5, 3)]
        print(json.dumps(row))


if __name__ == "__main__":
    main()
