"""Denoiser wrappers: scalings, losses, min-SNR weights, training sigmas, the exact mixture D."""

import math

import pytest
import torch

from t2i.denoisers import (
    EDMDenoiser,
    EpsDenoiser,
    GaussianMixtureDenoiser,
    VDenoiser,
    X0Denoiser,
)
from t2i.schedules import DiscreteSchedule, t_to_sigma

SCHED = DiscreteSchedule.preset("sd")
SIGMAS = SCHED.sigmas()
S_DATA = 0.7  # data x0 ~ N(0, S_DATA^2 I): E[x0 | x] = S_DATA^2 / (S_DATA^2 + sigma^2) * x


def exact_x0(x, sigma):
    return S_DATA**2 / (S_DATA**2 + sigma.reshape(-1, 1, 1, 1) ** 2) * x


def oracle_net(make):
    """The network each parameterisation should learn for Gaussian data, built only from what the
    network sees (c_in * x and c_noise): F = (E[x0|x] - c_skip x) / c_out."""
    holder = {}

    def net(x_in, c_noise, **cond):
        d = holder["d"]
        if isinstance(d, EDMDenoiser):
            sigma = (4 * c_noise).exp()
        else:
            sigma = t_to_sigma(c_noise, SIGMAS)
        c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1) for c in d.scalings(sigma))
        x = x_in / c_in
        return (exact_x0(x, sigma) - c_skip * x) / c_out

    holder["d"] = d = make(net)
    return d


MAKERS = {
    "eps": lambda net: EpsDenoiser(net, SCHED),
    "v": lambda net: VDenoiser(net, SCHED),
    "x0": lambda net: X0Denoiser(net, SCHED),
    "edm": lambda net: EDMDenoiser(net, sigma_data=S_DATA),
}


@pytest.mark.parametrize("kind", MAKERS)
def test_wrapper_with_its_oracle_network_is_the_exact_denoiser(kind):
    d = oracle_net(MAKERS[kind])
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 2, 3, 3, generator=g) * S_DATA, torch.randn(4, 2, 3, 3, generator=g)
    sigma = SIGMAS[torch.tensor([0, 100, 500, 999])]
    x = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    torch.testing.assert_close(d(x, sigma), exact_x0(x, sigma), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", MAKERS)
def test_loss_is_x0_error_over_c_out_squared(kind):
    """For any network: loss = |D(x) - x0|^2 / c_out^2 (the output-space MSE of each paper)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    d = MAKERS[kind](lambda x, t, **c: conv(x) * (1 + t.reshape(-1, 1, 1, 1) / 1000))
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    sigma = torch.tensor([0.1, 1.0, 9.0])
    with torch.no_grad():
        err = (d(x0 + sigma.reshape(-1, 1, 1, 1) * noise, sigma) - x0).pow(2).flatten(1).mean(1)
        c_out = d.scalings(sigma)[1]
        torch.testing.assert_close(d.loss(x0, sigma, noise), err / c_out**2, rtol=1e-4, atol=1e-6)


def test_targets_are_eps_v_x0():
    """With a zero network, the loss is the mean square of the target itself."""
    zero = lambda x, t, **c: torch.zeros_like(x)  # noqa: E731
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    sigma = torch.tensor([0.5, 3.0])
    alpha = (1 + sigma**2).rsqrt().reshape(-1, 1, 1, 1)  # VP: x_t = alpha x0 + s eps
    s = sigma.reshape(-1, 1, 1, 1) * alpha
    ms = lambda t: t.pow(2).flatten(1).mean(1)  # noqa: E731
    torch.testing.assert_close(EpsDenoiser(zero, SCHED).loss(x0, sigma, noise), ms(noise))
    torch.testing.assert_close(
        VDenoiser(zero, SCHED).loss(x0, sigma, noise), ms(alpha * noise - s * x0)
    )
    torch.testing.assert_close(X0Denoiser(zero, SCHED).loss(x0, sigma, noise), ms(x0))


@pytest.mark.parametrize(
    "kind, weight",
    [
        ("eps", lambda snr, g: torch.minimum(snr, g) / snr),
        ("v", lambda snr, g: torch.minimum(snr, g) / (snr + 1)),
        ("x0", lambda snr, g: torch.minimum(snr, g)),
    ],
)
def test_min_snr_gamma_weights(kind, weight):
    """Hang et al. 2023, eq. 9 and its v / x0 forms."""
    d = MAKERS[kind](lambda x, t, **c: x)
    d.min_snr_gamma = 5.0
    sigma = torch.tensor([0.05, 0.3, 0.447, 1.0, 10.0])
    torch.testing.assert_close(d.loss_weight(sigma), weight(sigma**-2, torch.tensor(5.0)))


def test_cond_is_passed_to_the_network_and_t_is_the_timestep():
    seen = {}

    def net(x, t, context=None, context_mask=None):
        seen.update(t=t, context=context, mask=context_mask)
        return torch.ones_like(x)

    d = EpsDenoiser(net, SCHED)
    ctx, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    x = torch.zeros(2, 1, 2, 2)
    out = d(x, SIGMAS[[250, 999]], context=ctx, context_mask=mask)
    assert seen["t"].tolist() == [250.0, 999.0]
    assert seen["context"] is ctx and seen["mask"] is mask
    torch.testing.assert_close(out, -SIGMAS[[250, 999]].reshape(-1, 1, 1, 1).expand_as(x))


def test_training_sigmas():
    d = EpsDenoiser(lambda x, t: x, SCHED)
    s1 = d.training_sigmas(512, torch.Generator().manual_seed(3))
    s2 = d.training_sigmas(512, torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2) and torch.isin(s1, SIGMAS).all()
    assert len(torch.unique(s1)) > 300  # uniform over 1000 timesteps
    e = EDMDenoiser(lambda x, t: x).training_sigmas(20000, torch.Generator().manual_seed(0))
    assert abs(e.log().mean().item() + 1.2) < 0.05 and abs(e.log().std().item() - 1.2) < 0.05


def test_mixture_denoiser_obeys_tweedie():
    """E[x0 | x] = x + sigma^2 grad log p_sigma(x), with p_sigma computed independently."""
    means, stds, w = (
        torch.tensor([[-2.0, 1.0], [1.5, 0.5]]),
        torch.tensor([0.4, 0.9]),
        torch.tensor([0.3, 0.7]),
    )
    d = GaussianMixtureDenoiser(means, stds, w)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    x.requires_grad_(True)
    sigma = 0.8
    comps = [
        torch.distributions.MultivariateNormal(
            m.double(), (s**2 + sigma**2) * torch.eye(2, dtype=torch.float64)
        )
        for m, s in zip(means, stds)
    ]
    log_p = torch.logsumexp(
        torch.stack([c.log_prob(x) + math.log(wk) for c, wk in zip(comps, w)]), 0
    )
    (score,) = torch.autograd.grad(log_p.sum(), x)
    torch.testing.assert_close(d(x.detach(), sigma), x.detach() + sigma**2 * score)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda d: d(torch.zeros(2, 1), torch.ones(3)),
            r"sigma must be a scalar or have shape \(2,\)",
        ),
        (
            lambda d: d(torch.zeros(2, 1), torch.tensor([1.0, -0.5])),
            r"sigma must be >= 0, got \[1.0, -0.5\]",
        ),
        (
            lambda d: d.loss(torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 1)),
            "training sigma must be > 0",
        ),
        (lambda d: d.loss(torch.zeros(2, 1), torch.ones(2), torch.zeros(2, 2)), "noise shape"),
        (lambda d: EpsDenoiser(lambda x, t: x, SIGMAS.flip(0)), "ascending"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call(EpsDenoiser(lambda x, t: x, SCHED))


def test_snr_floor_keeps_the_high_noise_weight_and_is_checked():
    """Truncated SNR (Salimans & Ho 2022) under min-SNR: x0 weight clamp(SNR, floor, gamma)."""
    from t2i.denoisers import make_denoiser
    from t2i.schedules import DiscreteSchedule

    sched = DiscreteSchedule.preset("ddpm")
    d = make_denoiser(torch.nn.Identity(), "x0", sched, min_snr_gamma=5.0, snr_floor=1.0)
    sigma = torch.tensor([0.1, 0.5, 1.0, 4.0, 40.0])
    torch.testing.assert_close(d.loss_weight(sigma), torch.tensor([5.0, 4.0, 1.0, 1.0, 1.0]))
    plain = make_denoiser(torch.nn.Identity(), "x0", sched, min_snr_gamma=5.0)
    assert plain.loss_weight(sigma)[-1] == 40.0**-2  # without it the layout's noise levels fade
    with pytest.raises(ValueError, match="snr_floor 2.0 needs min_snr_gamma >= it \\(got 1.0\\)"):
        make_denoiser(torch.nn.Identity(), "x0", sched, min_snr_gamma=1.0, snr_floor=2.0)


def test_make_denoiser_builds_each_parameterisation_and_rejects_unknown():
    from t2i.denoisers import PARAMETERISATIONS, make_denoiser
    from t2i.schedules import DiscreteSchedule

    net = torch.nn.Identity()
    for name, cls in PARAMETERISATIONS.items():
        d = make_denoiser(net, name, DiscreteSchedule.preset("ddpm"))
        assert type(d) is cls
    with pytest.raises(ValueError, match="unknown parameterisation 'epsilon'.*'eps'"):
        make_denoiser(net, "epsilon", DiscreteSchedule.preset("ddpm"))
    with pytest.raises(ValueError, match="needs a DiscreteSchedule"):
        make_denoiser(net, "v")
