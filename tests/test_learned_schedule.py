"""A learned noise schedule (variational diffusion models): the monotone log-SNR network, the
continuous-time bound against a known likelihood, the variance gradient of its shape, and the
recipe's `--schedule learned` (and `--variance learned`) runs: resume, export, load, sample."""

from __future__ import annotations

import dataclasses
import json
import math
from argparse import Namespace

import pytest
import torch
from resume_check import assert_resume_repeats
from torch.special import ndtr

import t2i
from t2i.likelihood import continuous_terms
from t2i.models.log_snr import LearnedLogSNR
from t2i.schedules import DiscreteSchedule
from t2i.training import diffusion
from t2i.training.diffusion_vdm import bound_loss
from t2i.training.loop import train

GRID = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # the 8-bit values in [-1, 1]


def test_the_schedule_increases_from_its_ends_with_its_own_derivative():
    schedule = LearnedLogSNR(-10.0, 6.0, features=8).double()
    with torch.no_grad():
        schedule.w.normal_()  # a shape far from the initial straight line
        schedule.c.normal_()
    t = torch.linspace(0, 1, 101, dtype=torch.float64).requires_grad_(True)
    gamma, slope = schedule(t)
    assert gamma[0].item() == pytest.approx(-10.0) and gamma[-1].item() == pytest.approx(6.0)
    assert bool((gamma.diff() > 0).all()) and bool((slope > 0).all())
    (auto,) = torch.autograd.grad(gamma.sum(), t)
    assert torch.allclose(auto, slope, rtol=1e-4)
    again = LearnedLogSNR.from_dict(json.loads(json.dumps(schedule.to_dict())))
    assert torch.allclose(again.sigmas(50), schedule.sigmas(50))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.pop("a"), "keys"),
        (lambda d: d.update(w=d["w"][:-1]), "one length"),
        (lambda d: d.update(a=float("nan")), "finite"),
        (lambda d: d.update(gamma_min=9.0), "gamma_min < gamma_max"),
        (lambda d: d.update(w=[0.0] * 2000, b=[0.0] * 2000, c=[0.0] * 2000), "features"),
    ],
)
def test_a_schedule_from_a_model_folder_is_checked(change, match):
    d = LearnedLogSNR(features=4).to_dict()
    change(d)
    with pytest.raises(ValueError, match=match):
        DiscreteSchedule("learned", 10, log_snr=d).betas()


def _discrete_gaussian(std: float):
    """P over the 256 values: N(0, std^2) integrated over each value's bin."""
    half = 1 / 255
    p = ndtr((GRID + half) / std) - ndtr((GRID - half) / std)
    p[0], p[-1] = ndtr((GRID[0] + half) / std), 1 - ndtr((GRID[-1] - half) / std)
    return p


def _exact_denoiser(p: torch.Tensor):
    """E[x0 | x] per dimension for x0 ~ p on the 256 values."""

    def denoise(x, sigma, **cond):
        s = sigma.view(-1, *[1] * x.ndim)
        logits = p.log() - (x[..., None] - GRID) ** 2 / (2 * s**2)
        return (logits.softmax(-1) * GRID).sum(-1)

    return denoise


def _bound_gap(denoiser, p, x0, index, draws: int, gen) -> torch.Tensor:
    """Per image: the bound in bits per dim minus the exact -log p(x0), averaged over draws."""
    schedule = LearnedLogSNR().double()
    ends = (schedule.gamma_min.detach(), schedule.gamma_max.detach())
    total = torch.zeros(len(x0), dtype=torch.float64)
    for _ in range(draws):
        t = torch.rand(len(x0), generator=gen, dtype=torch.float64)
        gamma, slope = (v.detach() for v in schedule(t))
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        total += sum(continuous_terms(denoiser, x0, gamma, slope, ends, noise).values())
    dims = x0[0].numel() * math.log(2)
    return total / draws / dims - (-p[index].log()).flatten(1).sum(1) / dims


def test_the_continuous_bound_is_tight_for_the_exact_denoiser_and_loose_for_a_wrong_one():
    """8-bit data from a discretised Gaussian: its exact denoiser gives a bound within 0.05
    bits/dim of the exact NLL (and not below it); the continuous Gaussian's denoiser, which
    does not know the data are discrete, pays for the bins it cannot resolve."""
    gen = torch.Generator().manual_seed(0)
    p = _discrete_gaussian(0.4)
    index = torch.multinomial(p, 1024 * 16, replacement=True, generator=gen).view(1024, 1, 4, 4)
    x0 = GRID[index]
    gap = _bound_gap(_exact_denoiser(p), p, x0, index, 8, gen)
    err = float(gap.std()) / math.sqrt(len(gap))
    assert -3 * err < float(gap.mean()) < 0.05 + 3 * err, (float(gap.mean()), err)

    def continuous(x, sigma, **cond):
        return 0.16 / (0.16 + sigma.view(-1, 1, 1, 1) ** 2) * x

    wrong = _bound_gap(continuous, p, x0, index, 2, gen)
    assert float(wrong.mean()) > 0.3


def test_the_shape_learns_the_variance_of_the_bound_and_the_ends_its_mean():
    """One backward of the batch mean: the ends get d mean(L), the shape d var(L) (batch)."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)

    def denoiser(x, sigma, **cond):
        return x / (1 + sigma.view(-1, 1, 1, 1) ** 2) + 0.1 * net(x)

    x0 = GRID[torch.randint(0, 256, (16, 1, 4, 4))].float()
    t, noise = torch.rand(16), torch.randn(16, 1, 4, 4)
    schedule = LearnedLogSNR(features=4)
    bound_loss(denoiser, schedule, x0, t, noise).mean().backward()
    got = {k: v.grad.clone() for k, v in schedule.named_parameters()}
    for name, want_of in (("gamma_min", "mean"), ("w", "var")):
        schedule.zero_grad()
        bits = _plain_bound(denoiser, schedule, x0, t, noise)
        (bits.mean() if want_of == "mean" else bits.var(unbiased=False)).backward()
        want = getattr(schedule, name).grad
        assert torch.allclose(got[name], want, rtol=1e-3, atol=1e-7), (name, got[name], want)
    assert float(got["w"].abs().max()) > 0


def _plain_bound(denoiser, schedule, x0, t, noise) -> torch.Tensor:
    gamma, slope = schedule(t)
    ends = (schedule.gamma_min, schedule.gamma_max)
    terms = continuous_terms(denoiser, x0, gamma, slope, ends, noise)
    return sum(terms.values()) / (x0[0].numel() * math.log(2))


# ---------------------------------------------------------------- the recipe


def _tiny(**changes) -> diffusion.DiffusionRecipeConfig:
    cfg = diffusion.preset("tiny")
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


LEARNED_SCHEDULE = {"schedule": "learned", "parameterisation": "v_logsnr"}


def _trainer(**changes):
    def run(tmp_path, name: str, resume: bool = False, **loop) -> dict:
        cfg = _tiny(**changes)
        cfg.loop = dataclasses.replace(cfg.loop, **loop)
        args = Namespace(data="shapes", out=str(tmp_path / name))
        return train(diffusion.build(cfg, args), cfg.loop, cfg.optim, tmp_path / name, resume)

    return run


@pytest.mark.parametrize("changes", [LEARNED_SCHEDULE, {"variance": "learned"}])
def test_resume_from_a_checkpoint_repeats_the_straight_run(tmp_path, changes):
    assert_resume_repeats(_trainer(**changes), tmp_path, steps=4, every=2)


def test_a_learned_schedule_run_exports_a_folder_that_samples_on_it(tmp_path):
    _trainer(**LEARNED_SCHEDULE)(tmp_path, "run", steps=3, ckpt_every=3)
    pipe = t2i.load(tmp_path / "run" / "model")
    schedule = pipe.index["schedule"]
    assert schedule["beta_schedule"] == "learned" and pipe.index["parameterisation"] == "v_logsnr"
    learnt = LearnedLogSNR.from_dict(schedule["log_snr"])
    assert torch.allclose(pipe.denoiser.sigmas.double(), learnt.sigmas(), rtol=1e-6)
    assert learnt.gamma_min.item() != -13.3  # it moved: the schedule was trained
    image = pipe("a red circle", steps=3, sampler="ddpm", seed=0)[0]
    assert image.size == (16, 16)
    images = (torch.rand(2, 3, 16, 16) * 255).round() / 127.5 - 1
    found = pipe.likelihood(images, ["a", "b"], 2, torch.Generator().manual_seed(0))
    assert set(found) == {"small", "large", "continuous"}
    assert all(bool(((v > 0) & (v < 30)).all()) for v in found.values())


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"schedule": "learned", "parameterisation": "v"}, "--parameterisation v_logsnr"),
        ({**LEARNED_SCHEDULE, "min_snr_gamma": 5.0}, "--min_snr_gamma 0"),
        ({"variance": "learned", "parameterisation": "edm"}, "discrete schedule"),
        ({"variance": "sometimes"}, "unknown variance 'sometimes'"),
    ],
)
def test_bad_combinations_are_refused_before_any_work(changes, match):
    with pytest.raises(ValueError, match=match):
        diffusion.check(_tiny(**changes))


def test_a_learned_variance_run_exports_a_folder_whose_ddpm_uses_it(tmp_path, monkeypatch):
    _trainer(variance="learned")(tmp_path, "run", steps=2, ckpt_every=2)
    pipe = t2i.load(tmp_path / "run" / "model")
    assert pipe.index["variance"] == "learned" and pipe.denoiser.learns_variance
    calls = []
    real = pipe.denoiser.with_variance
    monkeypatch.setattr(
        pipe.denoiser, "with_variance", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    pipe("a red circle", steps=3, sampler="ddpm", seed=0)
    assert len(calls) == 3  # every step read the variance, through CFG
    assert set(pipe.likelihood(torch.zeros(1, 3, 16, 16), ["a"], 2)) == {"learned"}
