"""The diffusion recipe with a learned noise schedule (`--schedule learned`): variational
diffusion models (Kingma et al. 2021).

The schedule gamma(t) = log sigma(t)^2 is a monotone network (t2i/models/log_snr.py) trained
with the UNet through the continuous-time bound, in bits per dimension: one t ~ U(0, 1) per image
(spread evenly over the batch from one uniform draw, their low-discrepancy sampler), the
diffusion term 1/2 gamma'(t) ||eps - eps_hat||^2, the prior term at gamma(1) and the 8-bit
decoder term at gamma(0). The bound depends on the schedule only through its two ends, which
learn from it; the shape between them learns to reduce the variance of the per-image bound
(their Sec. 5.2): its gradient is each image's bound gradient times 2 (L_i - mean L), the
gradient of the batch's variance, in one backward pass.

The network is `v_logsnr` (v-prediction reading log SNR, t2i/denoisers.py): its input does not
depend on the schedule, so the recipe's own denoiser trains through the bound as the schedule
moves, and the model runs on the schedule it ended with: the export writes that schedule into
model_index.json as beta_schedule "learned" (1,000 discrete steps), and every sampler and the
discrete bound read it like a fixed one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from t2i.likelihood import continuous_terms
from t2i.models.log_snr import LearnedLogSNR
from t2i.schedules import DiscreteSchedule
from t2i.training.data import text_condition

LEARNED = "learned"


class LearnedSchedule(nn.Module):
    """The recipe's model (a UNet, or a UNet with its text encoder) and the schedule learnt with
    it, as one module: the loop's optimizer, EMA and checkpoints cover both."""

    def __init__(self, inner: nn.Module, log_snr: LearnedLogSNR):
        super().__init__()
        self.inner, self.log_snr = inner, log_snr


def with_schedule(cfg, model: nn.Module) -> nn.Module:
    """The recipe's model with a fresh learnable schedule beside it, when it learns one."""
    return LearnedSchedule(model, LearnedLogSNR()) if cfg.schedule == LEARNED else model


def check_learned(cfg) -> None:
    """A learned schedule trains on the bound alone, through a network that reads log SNR."""
    if cfg.schedule != LEARNED:
        return
    wrong = {
        "parameterisation": (cfg.parameterisation, "v_logsnr"),
        "min_snr_gamma": (cfg.min_snr_gamma, 0.0),
        "variance": (cfg.variance, "fixed"),
        "timesteps": (cfg.timesteps, "uniform"),
        "low_res": (cfg.low_res, 0),
    }
    bad = {k: got for k, (got, want) in wrong.items() if got != want}
    if bad:
        needed = ", ".join(f"--{k} {want}" for k, (_, want) in wrong.items())
        raise ValueError(f"schedule learned trains on the bound: it needs {needed}; got {bad}")


def discrete_schedule(log_snr: LearnedLogSNR, steps: int = 1000) -> DiscreteSchedule:
    """The learnt schedule as the discrete one a model folder records (t = 1/T, ..., 1)."""
    return DiscreteSchedule(LEARNED, steps, log_snr=log_snr.to_dict())


class _VarianceGradient(torch.autograd.Function):
    """The identity whose backward multiplies image i's gradient by weight[i], read at backward
    time (the bound is known only after the forward pass that needs the schedule's values)."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.weight = weight
        return values.view_as(values)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.weight, None


def bound_loss(
    denoiser: nn.Module,
    log_snr: LearnedLogSNR,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    cond: dict | None = None,
) -> torch.Tensor:
    """The per-image continuous-time bound (B,) in bits per dimension, whose backward gives
    the network and the schedule's ends the bound's gradient and the schedule's shape the
    gradient of the bound's variance over the batch."""
    weight = torch.zeros(len(x0))
    with torch.autocast("cpu", enabled=False):
        shape, slope = log_snr.shape(t)
        shape = _VarianceGradient.apply(shape, weight)
        slope = _VarianceGradient.apply(slope, weight)
        span = log_snr.gamma_max - log_snr.gamma_min
        gamma, dgamma = log_snr.gamma_min + span * shape, span * slope
        ends = (log_snr.gamma_min, log_snr.gamma_max)
        terms = continuous_terms(denoiser, x0.float(), gamma, dgamma, ends, noise.float(), cond)
    bits = sum(terms.values()) / (x0[0].numel() * math.log(2))
    spread = bits.detach() - bits.detach().mean()
    weight.copy_(2 * spread)  # d/dshape of mean_i (L_i - mean L)^2, through the batch mean
    return bits


def bound_loss_fn(cfg, encode, denoiser: nn.Module, log_snr: LearnedLogSNR):
    """The step's loss: captions dropped for CFG as the recipe does, t evenly spread from one
    uniform draw, the noise; the draws in a fixed order."""

    def even_times(total: int, generator: torch.Generator) -> torch.Tensor:
        return (torch.rand((), generator=generator) + torch.arange(total) / total) % 1.0

    def loss(batch: dict, rng) -> torch.Tensor:
        x0 = batch["x0"]
        cond = text_condition(batch["captions"], cfg.caption_dropout, encode, rng)
        t = rng.draw(even_times)
        noise = rng.randn(*x0.shape[1:])
        return bound_loss(denoiser, log_snr, x0, t, noise, cond).mean()

    return loss
