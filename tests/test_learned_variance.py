"""Learned reverse variances (Nichol & Dhariwal 2021): a LearnedVariance denoiser whose v is 0
or 1 gives the bound and the DDPM sampler of the two fixed choices exactly; the L_vlb term
teaches v alone (the mean's gradient is stopped)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from t2i.denoisers import EpsDenoiser, LearnedVariance
from t2i.guidance import CFGDenoiser
from t2i.likelihood import VPTerms, step_term, vlb_loss
from t2i.samplers import sample_ddpm, sample_ddpm_learned
from t2i.schedules import betas_cosine

BETAS = betas_cosine(50)
SIGMAS = ((1 - torch.cumprod(1 - BETAS.double(), 0)) / torch.cumprod(1 - BETAS.double(), 0)).sqrt()


class _Net(nn.Module):
    """eps = w * x per channel; v_raw = tanh(u) per channel, or a constant."""

    def __init__(self, channels: int, v_raw: float | None = None):
        super().__init__()
        self.w = nn.Parameter(torch.full((channels,), 0.3))
        self.u = nn.Parameter(torch.zeros(channels))
        self.v_raw = v_raw

    def forward(self, x, t, **cond):
        eps = self.w[None, :, None, None] * x
        v = self.u.tanh()[None, :, None, None].expand_as(x)
        if self.v_raw is not None:
            v = torch.full_like(x, self.v_raw)
        return torch.cat([eps, v], 1)


class _Mean(nn.Module):
    """The same eps network without the variance channels."""

    def __init__(self, net: _Net):
        super().__init__()
        self.net = net

    def forward(self, x, t, **cond):
        return self.net(x, t)[:, : x.shape[1]]


def _pair(v_raw: float):
    net = _Net(2, v_raw)
    learned = LearnedVariance(EpsDenoiser(net, SIGMAS.float()))
    fixed = EpsDenoiser(_Mean(net), SIGMAS.float())
    return learned, fixed


@pytest.mark.parametrize(("v_raw", "fixed"), [(-1.0, "small"), (1.0, "large")])
def test_v_zero_and_one_give_the_two_fixed_variances_in_the_bound(v_raw, fixed):
    learned, plain = _pair(v_raw)
    terms = VPTerms.of(BETAS)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 4, 4, generator=gen) * 2 - 1
    for t in (0, 1, 17, 49):
        steps = torch.full((3,), t)
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        got = step_term(learned, x0, steps, noise, terms, variance="learned")
        want = step_term(plain, x0, steps, noise, terms, variance=fixed)
        assert torch.allclose(got, want, rtol=1e-6), (t, got, want)
        other = "large" if fixed == "small" else "small"
        if t == 1:  # where the two fixed choices differ most: the check can fail
            assert not torch.allclose(
                step_term(plain, x0, steps, noise, terms, variance=other), want
            )


@pytest.mark.parametrize(("v_raw", "fixed"), [(-1.0, "beta_tilde"), (1.0, "beta")])
def test_v_zero_and_one_give_the_two_fixed_ddpm_samplers(v_raw, fixed):
    learned, plain = _pair(v_raw)
    sigmas = torch.cat([SIGMAS.flip(0)[::5].float(), torch.zeros(1)])  # 10 respaced steps
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    a = sample_ddpm_learned(learned, x, sigmas, generator=torch.Generator().manual_seed(2))
    b = sample_ddpm(plain, x, sigmas, generator=torch.Generator().manual_seed(2), variance=fixed)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="learns its variance"):
        sample_ddpm_learned(plain, x, sigmas)


def test_vlb_loss_teaches_v_alone_and_is_the_bounds_step_term():
    net = _Net(2)
    model = LearnedVariance(EpsDenoiser(net, SIGMAS.float()))
    terms = VPTerms.of(BETAS)
    gen = torch.Generator().manual_seed(3)
    x0 = (torch.rand(4, 2, 4, 4, generator=gen) * 2 - 1).double()
    model.double()
    t = torch.tensor([0, 3, 20, 49])
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    loss = vlb_loss(model, x0, t, noise, terms)
    loss.sum().backward()
    assert net.w.grad is None or float(net.w.grad.abs().max()) == 0.0  # the mean: stopped
    assert float(net.u.grad.abs().max()) > 0  # v learns
    nats = step_term(model, x0, t, noise, terms, variance="learned")
    assert torch.allclose(loss * x0[0].numel() * torch.log(torch.tensor(2.0)).double(), nats)


def test_the_hybrid_loss_is_the_base_loss_plus_the_weighted_vlb_from_one_call():
    net = _Net(2)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    model = LearnedVariance(EpsDenoiser(net, SIGMAS.float()), BETAS, vlb_weight=0.01)
    gen = torch.Generator().manual_seed(4)
    x0 = torch.rand(4, 2, 4, 4, generator=gen) * 2 - 1
    t = torch.tensor([0, 3, 20, 49])
    noise = torch.randn(x0.shape, generator=gen)
    hybrid = model.loss(x0, SIGMAS.float()[t], noise)
    assert len(calls) == 1
    plain = EpsDenoiser(_Mean(net), SIGMAS.float()).loss(x0, SIGMAS.float()[t], noise)
    vlb = vlb_loss(model, x0, t, noise, VPTerms.of(BETAS))
    assert torch.allclose(hybrid, plain + 0.01 * 50 * vlb, rtol=1e-5)
    with pytest.raises(ValueError, match="sigmas of the training schedule"):
        model.loss(x0, SIGMAS.float()[t] * 1.01, noise)


def test_guidance_keeps_the_conditional_variance_and_ddpm_uses_it():
    """CFG extrapolates the mean only (GLIDE); the DDPM sampler reads a learnt variance through
    the guidance wrapper by itself, so `t2i generate --sampler ddpm` needs no other flag."""

    class _Cond(nn.Module):
        def forward(self, x, t, context=None, **_):
            c = context.mean(dim=(1, 2)).view(-1, 1, 1, 1)  # per image: cond and uncond differ
            return torch.cat([0.1 * x + c, c.clamp(-1, 1).expand_as(x)], 1)

    model = LearnedVariance(EpsDenoiser(_Cond(), SIGMAS.float()))
    cond, uncond = {"context": torch.full((1, 2, 3), 0.5)}, {"context": torch.full((1, 2, 3), -0.5)}
    cfg = CFGDenoiser(model, uncond, scale=3.0)
    x = torch.randn(1, 2, 4, 4)
    x0, v = cfg.with_variance(x, SIGMAS[10].float(), **cond)
    x0_c, v_c = model.with_variance(x, SIGMAS[10].float(), **cond)
    x0_u, _ = model.with_variance(x, SIGMAS[10].float(), **uncond)
    assert torch.allclose(x0, x0_u + 3.0 * (x0_c - x0_u)) and torch.equal(v, v_c)
    assert cfg.learns_variance and not CFGDenoiser(model.base, uncond).learns_variance
    sigmas = torch.cat([SIGMAS.flip(0)[::10].float(), torch.zeros(1)])
    a = sample_ddpm(
        cfg, x * sigmas[0], sigmas, {**cond}, generator=torch.Generator().manual_seed(5)
    )
    b = sample_ddpm_learned(
        cfg, x * sigmas[0], sigmas, {**cond}, generator=torch.Generator().manual_seed(5)
    )
    c = sample_ddpm(
        cfg,
        x * sigmas[0],
        sigmas,
        {**cond},
        generator=torch.Generator().manual_seed(5),
        variance="beta_tilde",
    )
    assert torch.equal(a, b) and not torch.allclose(a, c)
