"""Guidance as wrappers that are again denoisers: D'(x, sigma, **cond) -> x0_hat.

CFGDenoiser(D, uncond, scale, rescale)      classifier-free guidance, negative prompts
Unconditional(D, uncond)                     the model with the empty (or negative) prompt alone
EmbeddedGuidance(D, scale)                   a distilled model that reads the scale w as an input
ConditionAnnealing(D, noise, interval, gens) the prompt's states noised at high sigma (CADS)
GradientGuidance(D, log_prob, scale)         x0 += scale * sigma^2 * grad_x log p(y | x, sigma)
ClassifierGuidance(D, classifier, scale)     the above with log p from a noisy classifier
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from t2i.denoisers import append_dims, sigma_batch

MAX_CADS_NOISE = 10.0  # in units of the states' own std; the paper's usual scales are 0.025-0.25


class DenoiserWrapper(nn.Module):
    """A denoiser around a denoiser; exposes the inner noise range for sigmas_for(). A wrapper
    that also defines with_variance passes on an inner model's learnt variance."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    @property
    def learns_variance(self) -> bool:
        own = type(self).with_variance is not DenoiserWrapper.with_variance
        return own and getattr(self.inner, "learns_variance", False)

    def with_variance(self, x: torch.Tensor, sigma, **cond):
        raise NotImplementedError(f"{type(self).__name__} does not pass on a learnt variance")

    @property
    def sigmas(self) -> torch.Tensor:
        return self.inner.sigmas

    @property
    def sigma_min(self) -> float:
        return self.inner.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.inner.sigma_max


def _prediction(inner: nn.Module, learnt: bool):
    """inner as fn(x, sigma, **cond) -> (x0, v): its learnt variance, or None in v's place."""
    if learnt:
        return inner.with_variance
    return lambda x, sigma, **cond: (inner(x, sigma, **cond), None)


def _expand(v: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if v.shape[0] == batch:
        return v
    if v.shape[0] == 1:
        return v.expand(batch, *v.shape[1:])
    raise ValueError(f"{name} has batch {v.shape[0]}; expected 1 or {batch}")


def pad_context(cond: dict, uncond: dict) -> tuple[dict, dict]:
    """Pad context/context_mask of the shorter side with masked zeros so both have length L."""
    if "context" not in cond or "context" not in uncond:
        return cond, uncond
    lc, lu = cond["context"].shape[1], uncond["context"].shape[1]
    if lc == lu and ("context_mask" in cond) == ("context_mask" in uncond):
        return cond, uncond
    length = max(lc, lu)  # and a mask on both sides (all True where one was missing)
    out = []
    for d in (cond, uncond):
        ctx = d["context"]
        mask = d.get("context_mask")
        if mask is None:
            mask = torch.ones(ctx.shape[:2], dtype=torch.bool, device=ctx.device)
        pad = length - ctx.shape[1]
        ctx = torch.cat([ctx, ctx.new_zeros(ctx.shape[0], pad, ctx.shape[2])], 1)
        mask = torch.cat([mask, mask.new_zeros(mask.shape[0], pad)], 1)
        out.append({**d, "context": ctx, "context_mask": mask})
    return out[0], out[1]


def batch_cond_uncond(cond: dict, uncond: dict, batch: int) -> dict:
    """Concatenate cond and uncond along the batch: (2B, ...) per key, cond first.

    Keys only in cond (e.g. x_cond) are shared by both halves, except the text embeddings
    (context, pooled), which uncond must give; uncond entries of batch 1 are broadcast to B;
    context of different lengths is padded and masked.
    """
    unknown = sorted(set(uncond) - set(cond))
    if unknown:
        raise ValueError(f"uncond has keys {unknown} that cond lacks; allowed: {sorted(cond)}")
    text = [k for k in ("context", "pooled") if k in cond and k not in uncond]
    if text:
        raise ValueError(f"uncond lacks {text}: pass the empty or negative prompt's embeddings")
    cond, uncond = pad_context(cond, uncond)
    out = {}
    for key, c in cond.items():
        if not torch.is_tensor(c):
            raise ValueError(f"cond[{key!r}] must be a tensor to batch it, got {type(c).__name__}")
        c = _expand(c, batch, f"cond[{key!r}]")
        u = _expand(uncond.get(key, c), batch, f"uncond[{key!r}]")
        if c.shape[1:] != u.shape[1:]:
            raise ValueError(
                f"cond[{key!r}] shape {tuple(c.shape)} does not match uncond {tuple(u.shape)}"
            )
        out[key] = torch.cat([c, u])
    return out


class CFGDenoiser(DenoiserWrapper):
    """Classifier-free guidance: D_u + scale * (D_c - D_u), one batched call (Ho & Salimans 2022).

    `uncond` holds the unconditional inputs (empty or negative prompt), batch 1 or B. `rescale`
    blends in the output rescaled to the conditional prediction's std (Lin et al. 2023, Sec. 3.4),
    measured on eps = (x - x0) / sigma as diffusers does. `interval` (lo, hi): guide only where
    lo < sigma <= hi and use the conditional prediction alone elsewhere, at half the cost
    (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval"); None guides everywhere.
    """

    def __init__(
        self,
        inner: nn.Module,
        uncond: dict,
        scale: float = 7.5,
        rescale: float = 0.0,
        interval: tuple[float, float] | None = None,
    ):
        super().__init__(inner)
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"rescale must be in [0, 1], got {rescale}")
        self.uncond, self.scale, self.rescale = uncond, scale, rescale
        self.interval = check_interval(interval)

    def guides_at(self, sigma: torch.Tensor) -> bool:
        """Whether a step at these sigmas (one sampler step: all equal) is guided."""
        if self.interval is None:
            return True
        lo, hi = self.interval
        inside = (sigma > lo) & (sigma <= hi)
        if bool(inside.any()) != bool(inside.all()):
            raise ValueError("a guidance interval needs one sigma per call (a sampler step)")
        return bool(inside.all())

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        return self._guided(x, sigma, cond, _prediction(self.inner, learnt=False))[0]

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond):
        """(guided x0, the conditional prediction's v): the variance is not extrapolated (GLIDE
        keeps the conditional half's)."""
        return self._guided(x, sigma, cond, _prediction(self.inner, learnt=True))

    def _guided(self, x: torch.Tensor, sigma, cond: dict, call):
        sigma = sigma_batch(sigma, x)
        if not self.guides_at(sigma):
            return call(x, sigma, **cond)
        batched = batch_cond_uncond(cond, self.uncond, x.shape[0])
        x0, v = call(torch.cat([x, x]), torch.cat([sigma, sigma]), **batched)
        (x0_c, x0_u), v_c = x0.chunk(2), None if v is None else v.chunk(2)[0]
        x0 = x0_u + self.scale * (x0_c - x0_u)
        if self.rescale > 0:
            x0 = self._rescale(x, sigma, x0, x0_c)
        return x0, v_c

    def _rescale(self, x, sigma, x0, x0_c):
        s = append_dims(sigma, x.ndim)
        eps, eps_c = (x - x0) / s, (x - x0_c) / s
        dims = list(range(1, x.ndim))
        factor = eps_c.std(dim=dims, keepdim=True) / eps.std(dim=dims, keepdim=True)
        eps = eps * (self.rescale * factor + (1 - self.rescale))
        return x - s * eps


class Unconditional(DenoiserWrapper):
    """The denoiser with `uncond`'s text states in place of the prompt's: classifier-free
    guidance at scale 0 in one network evaluation instead of two. A guide reads the prompt from
    its own keys, so this is the unconditional model that classifier guidance steers."""

    def __init__(self, inner: nn.Module, uncond: dict):
        super().__init__(inner)
        self.uncond = uncond

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        return self.inner(x, sigma, **self._unconditional(x, cond))

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond):
        return self.inner.with_variance(x, sigma, **self._unconditional(x, cond))

    def _unconditional(self, x: torch.Tensor, cond: dict) -> dict:
        text = {k: _expand(v, x.shape[0], f"uncond[{k!r}]") for k, v in self.uncond.items()}
        return {**cond, **text}


class EmbeddedGuidance(DenoiserWrapper):
    """A model that takes the guidance scale as an input (an LCM student with a w-embedding):
    one network evaluation per step gives what the teacher's two did under CFG at that scale."""

    def __init__(self, inner: nn.Module, scale: float):
        super().__init__(inner)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        guidance = torch.full((x.shape[0],), self.scale, device=x.device)
        return self.inner(x, sigma, guidance=guidance, **cond)


class ConditionAnnealing(DenoiserWrapper):
    """Condition-annealed sampling (CADS; Sadat et al. 2024): the prompt's text states y become
    sqrt(g) y + noise * std(y) * sqrt(1 - g) n with fresh unit noise n at every call (the noise
    in units of the states' own spread, so a scale means the same for any text encoder), then
    are rescaled to y's own mean and std, where g is 0 at sigma >= hi, 1 at sigma <= lo and
    linear in log sigma between. Strong guidance picks one mode of the prompt early and keeps
    it; a blurred prompt while the layout is decided lets the sample wander among the prompt's
    modes, and the true prompt at low noise still decides what is drawn.

    Wrap it around the guidance (CFGDenoiser), so the negative or empty prompt stays exact.
    `generators`: one per image, so image i's noise does not depend on the batch it is in.
    """

    TEXT_KEYS = ("context", "pooled")

    def __init__(
        self,
        inner: nn.Module,
        noise: float,
        interval: tuple[float, float],
        generators: list[torch.Generator],
    ):
        super().__init__(inner)
        if not 0.0 < noise <= MAX_CADS_NOISE:
            raise ValueError(f"CADS noise must be in (0, {MAX_CADS_NOISE:g}], got {noise!r}")
        lo, hi = check_interval(interval)
        if lo <= 0:
            raise ValueError(f"a CADS interval needs lo > 0 (it is a log-sigma ramp), got {lo}")
        self.noise, self.interval, self.generators = float(noise), (lo, hi), generators

    def kept(self, sigma: torch.Tensor) -> torch.Tensor:
        """g(sigma) per image: the share of the prompt's signal kept, (B,) in [0, 1]."""
        lo, hi = self.interval
        log_sigma = sigma.double().clamp(min=1e-12).log()
        ramp = (math.log(hi) - log_sigma) / (math.log(hi) - math.log(lo))
        return ramp.clamp(0, 1).to(sigma.dtype)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        sigma = sigma_batch(sigma, x)
        g = self.kept(sigma)
        if bool((g < 1).any()):
            if len(self.generators) != x.shape[0]:
                raise ValueError(f"{len(self.generators)} generators for a batch of {x.shape[0]}")
            for key in self.TEXT_KEYS:
                if key in cond:
                    cond[key] = self._blurred(_expand(cond[key], x.shape[0], key), g)
        return self.inner(x, sigma, **cond)

    def _blurred(self, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        draws = [torch.randn(y.shape[1:], generator=gen) for gen in self.generators]
        n = torch.stack(draws).to(y)
        g = append_dims(g, y.ndim).to(y)
        dims = list(range(1, y.ndim))
        mean, std = y.mean(dims, keepdim=True), y.std(dims, keepdim=True)
        noisy = g.sqrt() * y + self.noise * std * (1 - g).sqrt() * n
        scaled = (noisy - noisy.mean(dims, keepdim=True)) / noisy.std(dims, keepdim=True)
        return scaled * std + mean


def check_interval(interval) -> tuple[float, float] | None:
    """A guidance interval: None (every step) or two numbers 0 <= lo < hi, as a tuple."""
    if interval is None:
        return None
    ok = isinstance(interval, (tuple, list)) and len(interval) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)
    if not ok or not 0 <= interval[0] < interval[1] < float("inf"):
        raise ValueError(
            f"guidance interval must be two sigmas lo,hi with 0 <= lo < hi (finite), "
            f"got {interval!r}"
        )
    return float(interval[0]), float(interval[1])


class GradientGuidance(DenoiserWrapper):
    """x0_hat + scale * sigma^2 * grad_x log p(y | x, sigma): Tweedie's formula applied to
    p(x | y) = p(x) p(y | x) (Dhariwal & Nichol 2021, Sec. 4). The hook for classifier and CLIP
    guidance (GLIDE): `log_prob(x, sigma, x0_hat, **kwargs) -> (B,)` is any differentiable score.

    Keyword arguments listed in `guide_keys` go to log_prob only, the rest to the inner denoiser.
    `through_denoiser` False: log_prob reads x alone (a network trained on noisy samples), so
    the denoiser runs without a graph and the gradient costs log_prob's backward pass only.
    """

    def __init__(
        self,
        inner: nn.Module,
        log_prob: Callable[..., torch.Tensor],
        scale: float = 1.0,
        guide_keys: tuple[str, ...] = ("y",),
        through_denoiser: bool = True,
    ):
        super().__init__(inner)
        self.log_prob, self.scale, self.guide_keys = log_prob, scale, guide_keys
        self.through_denoiser = through_denoiser

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        return self._steered(x, sigma, cond, _prediction(self.inner, learnt=False))[0]

    def with_variance(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond):
        """(steered x0, the inner model's v): the guide moves the mean, not the variance."""
        return self._steered(x, sigma, cond, _prediction(self.inner, learnt=True))

    def _steered(self, x: torch.Tensor, sigma, cond: dict, call):
        sigma = sigma_batch(sigma, x)
        guide = {k: cond.pop(k) for k in self.guide_keys if k in cond}
        if self.scale == 0:
            return call(x, sigma, **cond)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            with torch.set_grad_enabled(self.through_denoiser):
                x0, v = call(x_in, sigma, **cond)
            log_p = self.log_prob(x_in, sigma, x0, **guide)
            if log_p.shape != (x.shape[0],):
                raise ValueError(f"log_prob must return shape ({x.shape[0]},), got {log_p.shape}")
            (grad,) = torch.autograd.grad(log_p.sum(), x_in)
        v = None if v is None else v.detach()
        return x0.detach() + self.scale * append_dims(sigma**2, x.ndim) * grad, v


class ClassifierGuidance(GradientGuidance):
    """Classifier guidance with a noise-aware classifier(x, sigma) -> logits (B, K); pass the
    wanted labels as y (B,) long through extra_args."""

    def __init__(self, inner: nn.Module, classifier: Callable, scale: float = 1.0):
        def log_prob(x, sigma, x0, y):
            return classifier(x, sigma).log_softmax(-1).gather(1, y[:, None].long())[:, 0]

        super().__init__(inner, log_prob, scale, guide_keys=("y",))
        self.classifier = classifier if isinstance(classifier, nn.Module) else None
