"""A learned noise schedule (Kingma et al. 2021, variational diffusion models): gamma(t) = -log
SNR(t) = log sigma(t)^2 in sigma-space, a monotone function of t in [0, 1] with learnt ends.

    gamma(t) = gamma_min + (gamma_max - gamma_min) * (s(t) - s(0)) / (s(1) - s(0))
    s(t)     = softplus(a) * t + sum_k softplus(w_k) * sigmoid(softplus(b_k) * t + c_k)

Every weight that multiplies t is positive, so s, and gamma, increase with t; the ends are
parameters of their own, because the continuous-time bound depends on the schedule only through
them (the VDM paper's Sec. 5.1) while the shape sets the variance of its estimate. At the
start the sum is small and gamma a straight line from gamma_min to gamma_max. Elementwise only
(no matrix products), so bf16 autocast leaves it in fp32.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.functional import softplus

MAX_FEATURES = 1024  # a schedule read from a model folder is bounded by this
KEYS = ("gamma_min", "gamma_max", "a", "w", "b", "c")


class LearnedLogSNR(nn.Module):
    """gamma(t) and its derivative for t (B,) in [0, 1]; `features` sigmoids in the sum."""

    def __init__(self, gamma_min: float = -13.3, gamma_max: float = 5.0, features: int = 32):
        super().__init__()
        if not gamma_min < gamma_max:
            raise ValueError(f"need gamma_min < gamma_max, got {gamma_min}, {gamma_max}")
        if not 1 <= features <= MAX_FEATURES:
            raise ValueError(f"features must be in [1, {MAX_FEATURES}], got {features}")
        self.gamma_min = nn.Parameter(torch.tensor(float(gamma_min)))
        self.gamma_max = nn.Parameter(torch.tensor(float(gamma_max)))
        self.a = nn.Parameter(torch.tensor(math.log(math.e - 1)))  # softplus(a) = 1
        self.w = nn.Parameter(torch.full((features,), -6.0))  # softplus(-6) = 0.0025 each
        slopes = torch.linspace(2.0, 10.0, features)  # softplus(b): the sigmoids' steepness
        self.b = nn.Parameter(slopes + torch.log(-torch.expm1(-slopes)))
        self.c = nn.Parameter(-slopes * torch.linspace(0.0, 1.0, features))  # centres across [0, 1]

    def shape(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s~(t), ds~/dt): the normalised shape, 0 at t = 0 and 1 at t = 1."""
        ends = torch.stack([t.new_zeros(()), t.new_ones(())])
        s_t, ds_t = self._s(t.to(self.a.dtype))
        s_ends, _ = self._s(ends.to(self.a.dtype))
        span = s_ends[1] - s_ends[0]
        return (s_t - s_ends[0]) / span, ds_t / span

    def _s(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slope, w, b = softplus(self.a), softplus(self.w), softplus(self.b)
        z = torch.sigmoid(t[:, None] * b + self.c)
        return slope * t + (w * z).sum(1), slope + (w * b * z * (1 - z)).sum(1)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma(t), gamma'(t)), each (B,) in the parameters' dtype (fp32 in training)."""
        s, ds = self.shape(t)
        span = self.gamma_max - self.gamma_min
        return self.gamma_min + span * s, span * ds

    @torch.no_grad()
    def sigmas(self, steps: int = 1000) -> torch.Tensor:
        """(steps,) float64 sigmas at t = 1/steps, 2/steps, ..., 1, ascending: the discrete
        schedule a sampler and the discrete bound use (its last is gamma_max's)."""
        t = torch.arange(1, steps + 1, dtype=torch.float64) / steps
        return (self.gamma64(t) / 2).exp()

    def gamma64(self, t: torch.Tensor) -> torch.Tensor:
        """gamma(t) in float64 from the (fp32) parameters, for tables and the bound."""
        with torch.no_grad():
            return copy.deepcopy(self).double()(t.double())[0]

    def to_dict(self) -> dict:
        """The parameters as JSON numbers (model_index.json's schedule keeps them)."""
        return {k: getattr(self, k).detach().double().tolist() for k in KEYS}

    @staticmethod
    def from_dict(d: dict) -> LearnedLogSNR:
        """A schedule from to_dict's numbers, checked: the keys, lengths, finite values."""
        if not isinstance(d, dict) or sorted(d) != sorted(KEYS):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"a learned schedule has the keys {sorted(KEYS)}, got {got}")
        vectors = [d[k] for k in ("w", "b", "c")]
        n = len(vectors[0]) if isinstance(vectors[0], list) else -1
        if not all(isinstance(v, list) and len(v) == n for v in vectors):
            raise ValueError("a learned schedule's w, b, c are lists of one length")
        scalars = [d[k] for k in ("gamma_min", "gamma_max", "a")]
        numbers = scalars + [x for v in vectors for x in v]
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
            raise ValueError("a learned schedule's values must be finite numbers")
        schedule = LearnedLogSNR(d["gamma_min"], d["gamma_max"], n)
        with torch.no_grad():
            schedule.a.fill_(d["a"])
            for k in ("w", "b", "c"):
                getattr(schedule, k).copy_(torch.tensor(d[k]))
        return schedule
