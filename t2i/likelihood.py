"""The variational bound of a discrete VP diffusion model as a metric (Ho et al. 2020, eq. 5;
Nichol & Dhariwal 2021): -log p(x0) <= L_T + sum_{t>=1} L_{t-1} + L_0, with

    L_T     = KL(q(x_T | x0) || N(0, I))
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))     closed form: both are Gaussian
    L_0     = -log p(x0 | x1)                                   a discretised Gaussian on 8 bits

for any denoiser D(x, sigma, **cond) -> x0 in sigma-space (x = x_t / sqrt(abar_t), sigma_t =
sqrt((1 - abar_t) / abar_t)): the reverse mean is the posterior mean with D's estimate in place
of x0, the reverse variance fixed (beta~_t, "small", or beta_t, "large"). Reported in bits per
dimension, summed exactly over every timestep or estimated from sampled timesteps with its
standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

VARIANCES = ("small", "large")  # beta~_t (the posterior's) or beta_t; or "learned" (a model's)
DECODERS = ("discrete", "continuous")  # 8-bit bins of [-1, 1], or a Gaussian density


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (
        logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 / logvar2.exp() - 1
    )


def discretized_gaussian_nll(x, mean, logvar, bins: int = 256) -> torch.Tensor:
    """-log P(x) elementwise for x in [-1, 1] on `bins` levels under N(mean, exp(logvar)), the
    mass of x's bin (the end bins reach to -inf and +inf), in nats."""
    half = 1.0 / (bins - 1)
    scale = (0.5 * logvar).exp()
    upper = torch.special.ndtr((x + half - mean) / scale)
    lower = torch.special.ndtr((x - half - mean) / scale)
    mass = torch.where(x < -1 + half, upper, torch.where(x > 1 - half, 1 - lower, upper - lower))
    return -mass.clamp(min=1e-12).log()


def gaussian_nll(x, mean, logvar) -> torch.Tensor:
    """-log N(x; mean, exp(logvar)) elementwise, in nats (a density, for continuous data)."""
    return 0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 / logvar.exp())


@dataclass
class VPTerms:
    """The per-timestep constants of q(x_{t-1} | x_t, x0) for betas (T,), all float64."""

    betas: torch.Tensor
    abar: torch.Tensor
    coef_x0: torch.Tensor  # posterior mean = coef_x0 * x0 + coef_xt * x_t
    coef_xt: torch.Tensor
    post_logvar: torch.Tensor  # log beta~_t, with t = 0 taking t = 1's (beta~_0 is 0)

    @staticmethod
    def of(betas: torch.Tensor) -> VPTerms:
        betas = betas.double()
        if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a (T,) tensor of values in (0, 1)")
        abar = torch.cumprod(1 - betas, 0)
        prev = torch.cat([abar.new_ones(1), abar[:-1]])
        post_var = betas * (1 - prev) / (1 - abar)
        post_var = torch.cat([post_var[1:2], post_var[1:]]) if len(betas) > 1 else betas
        return VPTerms(
            betas=betas,
            abar=abar,
            coef_x0=betas * prev.sqrt() / (1 - abar),
            coef_xt=(1 - betas).sqrt() * (1 - prev) / (1 - abar),
            post_logvar=post_var.log(),
        )

    def learned_logvar(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Nichol & Dhariwal's interpolation v log beta_t + (1 - v) log beta~_t, v (B, ...) in
        [0, 1] at timesteps t (B,); at t = 0 beta_0 stands for both ends (as their code does)."""
        shape = (-1,) + (1,) * (v.ndim - 1)
        small = self.post_logvar[t].view(shape).to(v.dtype)
        large = self.model_logvar("large")[t].view(shape).to(v.dtype)
        return v * large + (1 - v) * small

    def model_logvar(self, variance: str) -> torch.Tensor:
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance {variance!r}; choose from {list(VARIANCES)}")
        if variance == "small":
            return self.post_logvar
        return torch.cat([self.post_logvar[:1], self.betas[1:].log()])


def gaussian_reverse_logvar(terms: VPTerms, std: float):
    """The true reverse steps' log variances, a function of t, for data from one Gaussian of
    standard deviation `std` per dimension: the posterior's plus the spread of the mean through
    Var[x0 | x_t]; at t = 0, Var[x0 | x_1] itself (a check of the bound: with these and the exact
    denoiser every reverse step is the true one)."""

    def logvar(t: torch.Tensor) -> torch.Tensor:
        a = terms.abar[t]
        sig2 = (1 - a) / a
        spread = std * std * sig2 / (std * std + sig2)
        step = terms.post_logvar[t].exp() + terms.coef_x0[t] ** 2 * spread
        return torch.where(t == 0, spread, step).log()

    return logvar


def prior_term(x0: torch.Tensor, terms: VPTerms) -> torch.Tensor:
    """L_T per image (B,), nats: KL(q(x_T | x0) || N(0, I))."""
    a = terms.abar[-1]
    mean, logvar = a.sqrt() * x0.double(), (1 - a).log().expand_as(x0)
    kl = normal_kl(mean, logvar.double(), torch.zeros_like(mean), torch.zeros_like(mean))
    return kl.flatten(1).sum(1)


@torch.no_grad()
def step_term(
    denoiser,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    terms: VPTerms,
    variance="small",
    decoder: str = "discrete",
    clip: bool = True,
    cond: dict | None = None,
) -> torch.Tensor:
    """L_{t-1} per image (B,), nats, at timesteps t (B,) from x_t drawn with `noise`; t = 0 is
    the decoder term L_0. `variance`: "small", "large", or a function of t giving the reverse
    step's log variance (a model that knows it), or "learned": a `LearnedVariance` denoiser's
    own per element."""
    return step_terms(denoiser, x0, t, noise, terms, (variance,), decoder, clip, cond)[0]


@torch.no_grad()
def step_terms(
    denoiser,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    terms: VPTerms,
    variances: tuple = ("small",),
    decoder: str = "discrete",
    clip: bool = True,
    cond: dict | None = None,
) -> list[torch.Tensor]:
    """`step_term` for each of several variances, from one network call: [(B,)] nats."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {list(DECODERS)}")
    x0d, shape = x0.double(), (-1,) + (1,) * (x0.ndim - 1)
    a = terms.abar[t].view(shape)
    x_t = a.sqrt() * x0d + (1 - a).sqrt() * noise.double()
    sigma = ((1 - a) / a).sqrt().flatten()
    x_sigma = (x_t / a.sqrt()).to(x0.dtype)  # the network's own precision; the bound in fp64
    if "learned" in variances:
        estimate, v = denoiser.with_variance(x_sigma, sigma.to(x0.dtype), **(cond or {}))
    else:
        estimate = denoiser(x_sigma, sigma.to(x0.dtype), **(cond or {}))
    estimate = estimate.double()
    if clip:  # the model's own range: its estimate of 8-bit pixels lies in [-1, 1]
        estimate = estimate.clamp(-1, 1)
    out = []
    for variance in variances:
        if variance == "learned":
            logvar = terms.learned_logvar(v.double(), t)
        else:
            chosen = variance(t) if callable(variance) else terms.model_logvar(variance)[t]
            logvar = chosen.double().view(shape).expand_as(estimate)
        nats = _step_nats(x0d, x_t, estimate, logvar, t, terms, decoder)
        out.append(nats.flatten(1).sum(1))
    return out


def _step_nats(x0, x_t, estimate, logvar, t, terms: VPTerms, decoder: str) -> torch.Tensor:
    """Per element, nats: KL(q(x_{t-1} | x_t, x0) || N(mean from `estimate`, exp(logvar))) for
    t > 0, the decoder's -log p(x0 | x_1) at t = 0; in x0's dtype."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    coef_x0, coef_xt = (c[t].view(shape).to(x0.dtype) for c in (terms.coef_x0, terms.coef_xt))
    mean = coef_x0 * estimate + coef_xt * x_t
    true_mean = coef_x0 * x0 + coef_xt * x_t
    post = terms.post_logvar[t].view(shape).to(x0.dtype).expand_as(mean)
    kl = normal_kl(true_mean, post, mean, logvar)
    nll = (discretized_gaussian_nll if decoder == "discrete" else gaussian_nll)(x0, mean, logvar)
    return torch.where((t == 0).view(shape), nll, kl)


@dataclass
class Bound:
    """A bound in bits per dimension: its mean over the images and its standard error (the
    images' spread, and with sampled timesteps theirs too); per image in `per_image`."""

    bits_per_dim: float
    stderr: float
    per_image: torch.Tensor
    timesteps: str  # "all T" or "K sampled of T"


def bits_per_dim(
    denoiser,
    x0: torch.Tensor,
    betas: torch.Tensor,
    samples: int | None = None,
    generator: torch.Generator | None = None,
    variance="small",
    **kw,
) -> Bound:
    """The bound on -log p(x0) for images x0 (B, ...): exactly, summed over all T timesteps
    (samples None), or estimated without bias from `samples` timesteps drawn uniformly per
    image (T times their mean). Keywords go to `step_term`."""
    return bounds(denoiser, x0, betas, samples, generator, (variance,), **kw)[0]


def bounds(
    denoiser,
    x0: torch.Tensor,
    betas: torch.Tensor,
    samples: int | None = None,
    generator: torch.Generator | None = None,
    variances: tuple = ("small",),
    **kw,
) -> list[Bound]:
    """`bits_per_dim` for each of several reverse variances from the same draws and network
    calls."""
    terms = VPTerms.of(betas)
    n_steps, batch = len(terms.betas), len(x0)
    prior = prior_term(x0, terms)

    def step(steps: torch.Tensor, noise: torch.Tensor) -> list[torch.Tensor]:
        return step_terms(denoiser, x0, steps, noise, terms, variances, **kw)

    if samples is None:
        totals = [prior.clone() for _ in variances]
        for t in range(n_steps):
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
            steps = torch.full((batch,), t, dtype=torch.long)
            for total, nats in zip(totals, step(steps, noise)):
                total += nats
        label = f"all {n_steps}"
    else:
        if samples < 2:
            raise ValueError(f"samples must be >= 2 (a standard error needs two), got {samples}")
        draws = [[] for _ in variances]
        for _ in range(samples):
            steps = torch.randint(0, n_steps, (batch,), generator=generator)
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
            for drawn, nats in zip(draws, step(steps, noise)):
                drawn.append(nats)
        totals = [prior + n_steps * torch.stack(d).mean(0) for d in draws]
        label = f"{samples} sampled of {n_steps}"
    return [_bound(total, x0, label) for total in totals]


def _bound(total_nats: torch.Tensor, x0: torch.Tensor, label: str) -> Bound:
    per_dim = total_nats / (x0[0].numel() * math.log(2))
    batch = len(x0)
    stderr = float(per_dim.std() / math.sqrt(batch)) if batch > 1 else float("nan")
    return Bound(float(per_dim.mean()), stderr, per_dim, label)


def vlb_loss(
    model,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    terms: VPTerms,
    cond: dict | None = None,
) -> torch.Tensor:
    """L_vlb per image (B,) in bits per dimension of a `LearnedVariance` model at timesteps t
    from x_t drawn with `noise` (one network call; the training loss makes the same call once
    for both of its terms, `vlb_bits`)."""
    a = terms.abar[t].view((-1,) + (1,) * (x0.ndim - 1)).to(x0.dtype)
    x = x0 + ((1 - a) / a).sqrt() * noise
    sigma = ((1 - a) / a).sqrt().flatten()
    estimate, v = model.with_variance(x, sigma, **(cond or {}))
    return vlb_bits(x0, x, estimate, v, t, terms)


def vlb_bits(
    x0: torch.Tensor,
    x: torch.Tensor,
    estimate: torch.Tensor,
    v: torch.Tensor,
    t: torch.Tensor,
    terms: VPTerms,
) -> torch.Tensor:
    """L_vlb per image (B,) in bits per dimension for training learned variances (Nichol &
    Dhariwal 2021, Sec. 3.1), from a network's estimate of x0 and its v at x (sigma-space) and
    timesteps t: L_{t-1} (t > 0) or the discretised decoder's L_0 (t = 0) with the model's
    variance and the mean's gradient stopped, so this term teaches v alone and L_simple keeps
    the mean; L_hybrid = L_simple + lambda * T * mean_t L_vlb (lambda = 0.001)."""
    a = terms.abar[t].view((-1,) + (1,) * (x0.ndim - 1)).to(x0.dtype)
    x_t = a.sqrt() * x
    estimate = estimate.detach().clamp(-1, 1)
    nats = _step_nats(x0, x_t, estimate, terms.learned_logvar(v, t), t, terms, "discrete")
    return nats.flatten(1).mean(1) / math.log(2)


def continuous_terms(
    denoiser,
    x0: torch.Tensor,
    gamma_t: torch.Tensor,
    dgamma_t: torch.Tensor,
    gamma_ends: tuple[torch.Tensor, torch.Tensor],
    noise: torch.Tensor,
    cond: dict | None = None,
) -> dict[str, torch.Tensor]:
    """The continuous-time bound's three terms per image (B,), nats (Kingma et al. 2021, eq. 17
    with their decoder and prior), for a schedule gamma(t) = log sigma(t)^2 with ends gamma_ends
    = (gamma(0), gamma(1)) and images x0 on 8 bits in [-1, 1]:

        diffusion = 1/2 gamma'(t) ||eps - eps_hat(x_t)||^2       at one t ~ U(0, 1) per image
        prior     = KL(q(z_1 | x0) || N(0, I))
        decoder   = -log p(x0 | z_0), 8-bit bins of N(z_0 / alpha_0, sigma(0)^2)

    Their sum estimates -log p(x0) from above, without bias. Differentiable in the denoiser and
    in the schedule's values."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    sigma = (gamma_t / 2).exp()
    x = x0 + sigma.view(shape) * noise
    eps_hat = (x - denoiser(x, sigma, **(cond or {})).float()) / sigma.view(shape)
    diffusion = 0.5 * dgamma_t * (noise - eps_hat).pow(2).flatten(1).sum(1)
    gamma_0, gamma_1 = gamma_ends
    var_1 = torch.sigmoid(gamma_1)  # sigma_1^2 in VP terms; alpha_1^2 = 1 - var_1
    prior = 0.5 * ((1 - var_1) * x0.pow(2) + var_1 - var_1.log() - 1).flatten(1).sum(1)
    z_0 = x0 + (gamma_0 / 2).exp() * noise  # z_0 / alpha_0 in sigma-space
    decoder = discretized_gaussian_nll(x0, z_0, gamma_0.expand_as(x0)).flatten(1).sum(1)
    return {"diffusion": diffusion, "prior": prior, "decoder": decoder}


@torch.no_grad()
def continuous_bits(
    denoiser,
    x0: torch.Tensor,
    schedule,
    draws: int,
    generator: torch.Generator | None = None,
    cond: dict | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """The continuous-time bound per image (B,) in bits per dimension for a schedule(t) ->
    (gamma, gamma') (a LearnedLogSNR), the mean of `draws` draws of t ~ U(0, 1) and noise per
    image: unbiased, its spread the images' and the draws' together. `clip`: the estimate of
    x0 clamped to [-1, 1], the model's range, as `step_term` does (on Fashion-MNIST's black
    backgrounds an estimate a hair below -1 costs bits at every low noise level)."""
    ends = tuple(v.detach().float() for v in schedule(torch.tensor([0.0, 1.0]))[0])
    if clip:
        unclipped = denoiser

        def denoiser(x, sigma, **kw):
            return unclipped(x, sigma, **kw).clamp(-1, 1)

    total = torch.zeros(len(x0), dtype=torch.float64)
    for _ in range(draws):
        t = torch.rand(len(x0), generator=generator)
        gamma, slope = schedule(t)
        noise = torch.randn(x0.shape, generator=generator)
        terms = continuous_terms(denoiser, x0, gamma, slope, ends, noise, cond)
        total += sum(terms.values()).double()
    return total / draws / (x0[0].numel() * math.log(2))
