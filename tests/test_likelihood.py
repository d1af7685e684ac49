"""The variational bound (t2i/likelihood.py): its pieces against closed forms, and on data from
one Gaussian, whose exact denoiser and reverse variances make every reverse step the true one,
the bound equals the analytic negative log-likelihood; with fixed variances it lies above."""

from __future__ import annotations

import math

import pytest
import torch

from t2i.denoisers import GaussianMixtureDenoiser
from t2i.likelihood import (
    VPTerms,
    bits_per_dim,
    discretized_gaussian_nll,
    gaussian_reverse_logvar,
    normal_kl,
)
from t2i.schedules import betas_cosine

MU, S = torch.tensor([[0.3, -0.2, 0.1, 0.0]]), 0.2


def test_normal_kl_is_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = (torch.randn(50, generator=gen, dtype=torch.float64) for _ in range(4))
    p = torch.distributions.Normal(m1, (0.5 * lv1).exp())
    q = torch.distributions.Normal(m2, (0.5 * lv2).exp())
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), torch.distributions.kl_divergence(p, q))


def test_the_discretised_decoder_is_a_distribution_over_256_levels():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, logvar in ((0.0, -2.0), (0.9, -8.0), (-1.3, 0.5)):
        nll = discretized_gaussian_nll(levels, torch.tensor(mean), torch.tensor(logvar))
        assert float((-nll).exp().sum()) == pytest.approx(1.0, abs=1e-9)


def _data(n: int = 2000):
    gen = torch.Generator().manual_seed(0)
    x0 = MU.double() + S * torch.randn(n, 4, generator=gen, dtype=torch.float64)
    nll = (0.5 * math.log(2 * math.pi * S * S) + (x0 - MU.double()) ** 2 / (2 * S * S)).sum(1)
    return x0, nll / (4 * math.log(2))  # bits per dimension, image by image


@pytest.mark.parametrize("steps", [10, 1000])
def test_with_the_true_reverse_steps_the_bound_is_the_likelihood(steps):
    denoiser = GaussianMixtureDenoiser(MU, torch.tensor([S]), torch.tensor([1.0]))
    x0, nll = _data()
    betas = betas_cosine(steps)
    common = dict(decoder="continuous", clip=False, generator=torch.Generator().manual_seed(1))
    exact = bits_per_dim(
        denoiser, x0, betas, variance=gaussian_reverse_logvar(VPTerms.of(betas), S), **common
    )
    gap = exact.per_image - nll
    assert abs(float(gap.mean())) < 3 * float(gap.std()) / math.sqrt(len(gap))
    assert exact.timesteps == f"all {steps}"
    for fixed in ("small", "large"):  # a bound: above the likelihood when a step is wrong
        gap = bits_per_dim(denoiser, x0, betas, variance=fixed, **common).per_image - nll
        assert float(gap.mean()) > 3 * float(gap.std()) / math.sqrt(len(gap))


def test_sampled_timesteps_estimate_the_exact_sum():
    denoiser = GaussianMixtureDenoiser(MU, torch.tensor([S]), torch.tensor([1.0]))
    x0, _ = _data(1000)
    betas, kw = betas_cosine(50), dict(decoder="continuous", clip=False)
    exact = bits_per_dim(denoiser, x0, betas, generator=torch.Generator().manual_seed(2), **kw)
    sampled = bits_per_dim(
        denoiser, x0, betas, samples=20, generator=torch.Generator().manual_seed(3), **kw
    )
    assert sampled.timesteps == "20 sampled of 50"
    spread = math.hypot(exact.stderr, sampled.stderr)
    assert abs(exact.bits_per_dim - sampled.bits_per_dim) < 4 * spread
    with pytest.raises(ValueError, match="samples must be >= 2"):
        bits_per_dim(denoiser, x0, betas, samples=1)
    with pytest.raises(ValueError, match="unknown variance 'huge'"):
        bits_per_dim(denoiser, x0, betas, variance="huge")
