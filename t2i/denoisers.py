"""Parameterisations as denoisers: D(x, sigma, **cond) -> x0_hat, each owning its training loss.

Every wrapper is D(x, sigma) = c_skip * x + c_out * net(c_in * x, c_noise, **cond)
(Karras et al. 2022, eq. 7); x is in sigma-space, x = x0 + sigma * eps. The loss is the MSE of the
network output against its own target F* = (x0 - c_skip * x) / c_out, which is L_simple for eps,
the v loss for v and the lambda-weighted EDM loss for EDM.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from t2i import likelihood
from t2i.schedules import DiscreteSchedule, betas_from_abar, sigma_to_t


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) with `ndim` dims in total, to broadcast against x."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def sigma_batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """sigma as a (B,) tensor on x's device/dtype; a scalar is broadcast. Raises on bad input."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(
            f"sigma must be a scalar or have shape ({x.shape[0]},) to match x {tuple(x.shape)}, "
            f"got {tuple(sigma.shape)}"
        )
    if (sigma < 0).any() or sigma.isnan().any():
        raise ValueError(f"sigma must be >= 0, got {sigma.tolist()}")
    return sigma


class Denoiser(nn.Module):
    """Base wrapper: subclasses give scalings(sigma) -> (c_skip, c_out, c_in) and c_noise(sigma)."""

    learns_variance = False  # True: with_variance(x, sigma) also gives the reverse variance

    def __init__(self, net: nn.Module, min_snr_gamma: float | None = None, snr_floor: float = 0.0):
        super().__init__()
        self.net = net
        self.min_snr_gamma = min_snr_gamma  # None: plain loss; 5.0: Hang et al. 2023 weighting
        # with min_snr_gamma: the weight never falls below this at high noise; 1 is Salimans &
        # Ho's truncated SNR (2022), which keeps training where an image's layout is decided
        self.snr_floor = snr_floor

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        """x: (B, ...) noisy sample, sigma: (B,) or scalar -> x0_hat (B, ...)."""
        sigma = sigma_batch(sigma, x)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.scalings(sigma))
        return c_skip * x + c_out * self.net(c_in * x, self.c_noise(sigma), **cond)

    def loss(
        self, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, **cond
    ) -> torch.Tensor:
        """Per-sample loss (B,) at noise level sigma (B,), noise ~ N(0, I) shaped like x0."""
        out, x = self.noised_output(x0, sigma, noise, **cond)
        return self.output_loss(out, x0, x, sigma_batch(sigma, x0))

    def noised_output(
        self, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, **cond
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the network's raw output, the noisy input x = x0 + sigma * noise): what the loss
        compares with its target, and what a distillation compares with a teacher's."""
        sigma = sigma_batch(sigma, x0)
        if (sigma <= 0).any():
            raise ValueError(f"training sigma must be > 0, got {sigma.tolist()}")
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        c_in = append_dims(self.scalings(sigma)[2], x0.ndim)
        x = x0 + append_dims(sigma, x0.ndim) * noise
        return self.net(c_in * x, self.c_noise(sigma), **cond), x

    def output_loss(
        self, out: torch.Tensor, x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample weighted MSE (B,) of the network's output at x against its own target."""
        c_skip, c_out, _ = (append_dims(c, x0.ndim) for c in self.scalings(sigma))
        target = (x0 - c_skip * x) / c_out
        return (out - target).pow(2).flatten(1).mean(1) * self.loss_weight(sigma)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """min(SNR, gamma) in x0 terms (Hang et al. 2023), at least snr_floor; i.e. times c_out^2
        on the output MSE."""
        if self.min_snr_gamma is None:
            return torch.ones_like(sigma)
        c_out = self.scalings(sigma)[1]
        return (sigma**-2).clamp(self.snr_floor, self.min_snr_gamma) * c_out**2

    def training_sigmas(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError


class DiscreteVPDenoiser(Denoiser):
    """A DDPM-style network on T discrete timesteps: c_in = 1/sqrt(1+sigma^2), c_noise = t."""

    def __init__(
        self,
        net: nn.Module,
        schedule: DiscreteSchedule | torch.Tensor,  # or the (T,) sigmas, ascending in t
        min_snr_gamma: float | None = None,
        snr_floor: float = 0.0,
    ):
        super().__init__(net, min_snr_gamma, snr_floor)
        sigmas = schedule.sigmas() if isinstance(schedule, DiscreteSchedule) else schedule
        if sigmas.ndim != 1 or len(sigmas) < 2 or not (sigmas[1:] >= sigmas[:-1]).all():
            raise ValueError("schedule sigmas must be a 1-D ascending tensor of length >= 2")
        self.register_buffer("sigmas", sigmas.float(), persistent=False)

    @property
    def sigma_min(self) -> float:
        return self.sigmas[0].item()

    @property
    def sigma_max(self) -> float:
        return self.sigmas[-1].item()

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma_to_t(sigma, self.sigmas).to(sigma.dtype)

    def training_sigmas(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """t ~ U{0, ..., T-1} (Ho et al. 2020, Algorithm 1) -> sigma_t. (B,)"""
        t = torch.randint(0, len(self.sigmas), (batch,), generator=generator)
        return self.sigmas[t.to(self.sigmas.device)]


class EpsDenoiser(DiscreteVPDenoiser):
    """The network predicts the noise eps: x0 = x - sigma * eps (Ho et al. 2020)."""

    def scalings(self, sigma):
        return torch.ones_like(sigma), -sigma, (1 + sigma**2).rsqrt()


class VDenoiser(DiscreteVPDenoiser):
    """The network predicts v = alpha eps - s x0 in VP terms (Salimans & Ho 2022, Sec. 4)."""

    def scalings(self, sigma):
        return 1 / (1 + sigma**2), -sigma * (1 + sigma**2).rsqrt(), (1 + sigma**2).rsqrt()


class LogSNRVDenoiser(VDenoiser):
    """v-prediction whose network reads the noise level as log SNR instead of a timestep index:
    c_noise = 1000 (log sigma^2 - GAMMA_LO) / (GAMMA_HI - GAMMA_LO), the same for every
    schedule, so a network trained while its schedule was learnt (variational diffusion
    models) runs on the schedule it ended with. The range is VDM's initial one."""

    GAMMA_LO, GAMMA_HI = -13.3, 5.0

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        log_snr = 2 * sigma.clamp(min=1e-20).log()  # log sigma^2 = -log SNR
        return 1000 * (log_snr - self.GAMMA_LO) / (self.GAMMA_HI - self.GAMMA_LO)


class X0Denoiser(DiscreteVPDenoiser):
    """The network predicts x0 directly."""

    def scalings(self, sigma):
        return torch.zeros_like(sigma), torch.ones_like(sigma), (1 + sigma**2).rsqrt()


class EDMDenoiser(Denoiser):
    """EDM preconditioning, continuous sigma (Karras et al. 2022, Table 1)."""

    def __init__(
        self,
        net: nn.Module,
        sigma_data: float = 0.5,  # std of the data
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        p_mean: float = -1.2,  # training log sigma ~ N(p_mean, p_std^2)
        p_std: float = 1.2,
        min_snr_gamma: float | None = None,
        snr_floor: float = 0.0,
    ):
        super().__init__(net, min_snr_gamma, snr_floor)
        self.sigma_data, self.sigma_min, self.sigma_max = sigma_data, sigma_min, sigma_max
        self.p_mean, self.p_std = p_mean, p_std

    def scalings(self, sigma):
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data * (sigma**2 + sd2).rsqrt()
        return c_skip, c_out, (sigma**2 + sd2).rsqrt()

    def c_noise(self, sigma):
        return sigma.log() / 4

    def training_sigmas(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return (self.p_mean + self.p_std * torch.randn(batch, generator=generator)).exp()


VARIANCES = ("fixed", "learned")  # the reverse steps' variance: the sampler's, or the network's

PARAMETERISATIONS: dict[str, type[Denoiser]] = {
    "eps": EpsDenoiser,
    "v": VDenoiser,
    "v_logsnr": LogSNRVDenoiser,
    "x0": X0Denoiser,
    "edm": EDMDenoiser,
}


class LearnedVariance(nn.Module):
    """A discrete VP denoiser whose network also outputs the reverse step's variance (Nichol &
    Dhariwal 2021, eq. 15): its last C of 2C output channels are v_raw in [-1, 1], v = (v_raw +
    1) / 2, and the step's log variance is v log beta_t + (1 - v) log beta~_t per element.

    forward(x, sigma) -> x0, so every sampler runs it as it is; with_variance(x, sigma) -> (x0,
    v) for what uses the variance (sample_ddpm, likelihood.step_term with variance="learned").
    loss() is L_hybrid = the base's own loss on the mean + vlb_weight * T * L_vlb on v, from one
    network call. `betas`: the training schedule's (T,), by default recovered from the sigmas.
    """

    learns_variance = True

    def __init__(
        self, base: DiscreteVPDenoiser, betas: torch.Tensor | None = None, vlb_weight: float = 1e-3
    ):
        super().__init__()
        if not vlb_weight >= 0:
            raise ValueError(f"vlb_weight must be >= 0, got {vlb_weight}")
        self.base, self.vlb_weight = base, vlb_weight
        if betas is None:
            betas = betas_from_abar(1 / (1 + base.sigmas.double() ** 2))
        self.terms = likelihood.VPTerms.of(betas)

    @property
    def sigmas(self) -> torch.Tensor:
        return self.base.sigmas

    @property
    def sigma_min(self) -> float:
        return self.base.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.base.sigma_max

    def training_sigmas(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.base.training_sigmas(batch, generator)

    def _outputs(self, x: torch.Tensor, sigma: torch.Tensor, **cond):
        """(F, v_raw, (c_skip, c_out)) of one network call."""
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.base.scalings(sigma))
        out = self.base.net(c_in * x, self.base.c_noise(sigma), **cond)
        if out.shape[1] != 2 * x.shape[1]:
            raise ValueError(
                f"a learned-variance network outputs 2 x {x.shape[1]} channels, got {out.shape[1]}"
            )
        f, v_raw = out.chunk(2, dim=1)
        return f, v_raw, (c_skip, c_out)

    def with_variance(
        self, x: torch.Tensor, sigma: torch.Tensor | float, **cond
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = sigma_batch(sigma, x)
        f, v_raw, (c_skip, c_out) = self._outputs(x, sigma, **cond)
        return c_skip * x + c_out * f, (v_raw + 1) / 2

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        return self.with_variance(x, sigma, **cond)[0]

    def timesteps_of(self, sigma: torch.Tensor) -> torch.Tensor:
        """The discrete timestep of each training sigma (B,); a sigma off the schedule: an error."""
        t = (sigma[:, None].double() - self.sigmas[None].double()).abs().argmin(1)
        if not torch.allclose(self.sigmas[t].double(), sigma.double(), rtol=1e-4):
            raise ValueError("the vlb term needs sigmas of the training schedule")
        return t

    def loss(self, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, **cond):
        """Per-sample L_hybrid (B,): the base's weighted loss on the first C channels plus
        vlb_weight * T * L_vlb in bits per dimension (the mean's gradient stopped there)."""
        sigma = sigma_batch(sigma, x0)
        x = x0 + append_dims(sigma, x0.ndim) * noise
        f, v_raw, (c_skip, c_out) = self._outputs(x, sigma, **cond)
        simple = self.base.output_loss(f, x0, x, sigma)
        estimate = (c_skip * x + c_out * f).float()
        t = self.timesteps_of(sigma)
        vlb = likelihood.vlb_bits(
            x0.float(), x.float(), estimate, (v_raw.float() + 1) / 2, t, self.terms
        )
        return simple + self.vlb_weight * len(self.sigmas) * vlb


def make_denoiser(
    net: nn.Module,
    parameterisation: str,
    schedule: DiscreteSchedule | None = None,
    min_snr_gamma: float | None = None,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    snr_floor: float = 0.0,
    variance: str = "fixed",
    vlb_weight: float = 1e-3,
) -> Denoiser:
    """Wrap `net` in the named parameterisation; eps/v/x0 need the discrete training schedule,
    edm the data's std (`sigma_data`: 0.5 for images in [-1, 1], 1 for latents scaled to unit std)
    and the centre of its training log-sigmas (`p_mean`; only training reads it); `snr_floor`
    (with `min_snr_gamma`) the least loss weight, in [0, min_snr_gamma]. `variance` "learned": a
    discrete model whose network also outputs its reverse variance (`LearnedVariance`, trained
    with `vlb_weight`).
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose from {list(VARIANCES)}")
    if variance == "learned":
        if parameterisation == "edm" or schedule is None:
            raise ValueError("variance 'learned' needs a discrete schedule (eps, v or x0), not edm")
        base = make_denoiser(net, parameterisation, schedule, min_snr_gamma, snr_floor=snr_floor)
        return LearnedVariance(base, schedule.betas(), vlb_weight)
    if snr_floor and not (min_snr_gamma and 0 <= snr_floor <= min_snr_gamma):
        raise ValueError(
            f"snr_floor {snr_floor} needs min_snr_gamma >= it (got {min_snr_gamma}): the weight "
            "is min(SNR, min_snr_gamma), at least snr_floor"
        )
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"unknown parameterisation {parameterisation!r}; choose from {list(PARAMETERISATIONS)}"
        )
    weighting = {"min_snr_gamma": min_snr_gamma, "snr_floor": snr_floor}
    if parameterisation == "edm":
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        return EDMDenoiser(net, sigma_data, p_mean=p_mean, **weighting)
    if schedule is None:
        raise ValueError(f"parameterisation {parameterisation!r} needs a DiscreteSchedule")
    return PARAMETERISATIONS[parameterisation](net, schedule, **weighting)


def consistency_scalings(
    t: torch.Tensor, sigma_data: float = 0.5, scale: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) of a consistency model at timestep t (LCM's boundary condition, Luo et al.
    2023, eq. 5 with t scaled by `scale`): c_skip(0) = 1 and c_out(0) = 0, so f(x, 0) = x; from
    one timestep up c_skip is below 3e-3 and f is the network's own x0 estimate."""
    st = scale * t.double()
    c_skip = sigma_data**2 / (st**2 + sigma_data**2)
    c_out = st / (st**2 + sigma_data**2).sqrt()
    return c_skip.float(), c_out.float()


class ConsistencyFunction(nn.Module):
    """f(x, sigma) = c_skip x + c_out D(x, sigma) over a discrete VP denoiser D: the map of a
    point of the probability-flow ODE to its end that consistency distillation trains."""

    def __init__(self, denoiser: DiscreteVPDenoiser, sigma_data: float = 0.5, scale: float = 10.0):
        super().__init__()
        if not isinstance(denoiser, DiscreteVPDenoiser):
            raise ValueError(
                "consistency distillation needs a discrete (VP) model, not "
                f"{type(denoiser).__name__}"
            )
        self.inner, self.sigma_data, self.scale = denoiser, sigma_data, scale

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        sigma = sigma_batch(sigma, x)
        t = self.inner.c_noise(sigma)
        c_skip, c_out = (
            append_dims(c, x.ndim) for c in consistency_scalings(t, self.sigma_data, self.scale)
        )
        return c_skip * x + c_out * self.inner(x, sigma, **cond)


class GaussianMixtureDenoiser(nn.Module):
    """The exact denoiser E[x0 | x] for data x0 ~ sum_k w_k N(mu_k, s_k^2 I); for tests and demos.

    D(x, sigma, y) conditions on the component y (B,) when given; y = -1 means unconditional.
    """

    def __init__(
        self,
        means: torch.Tensor,  # (K, *shape)
        stds: torch.Tensor,  # (K,), > 0
        weights: torch.Tensor,  # (K,), sum 1
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
    ):
        super().__init__()
        self.register_buffer("means", means.flatten(1).double())
        self.register_buffer("stds", stds.double())
        self.register_buffer("log_w", weights.double().log())
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def log_posterior(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """log p(k | x) under the noisy marginal, x ~ N(mu_k, (s_k^2 + sigma^2) I). (B, K)"""
        sigma = sigma_batch(sigma, x).double()
        var = self.stds**2 + sigma[:, None] ** 2  # (B, K)
        d2 = (x.flatten(1).double()[:, None] - self.means).pow(2).sum(-1)
        dim = self.means.shape[1]
        log_p = self.log_w - 0.5 * d2 / var - 0.5 * dim * (2 * math.pi * var).log()
        return log_p.log_softmax(-1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, y=None) -> torch.Tensor:
        sigma = sigma_batch(sigma, x).double()
        log_r = self.log_posterior(x, sigma)
        if y is not None:  # restrict to component y where y >= 0
            keep = (y[:, None] < 0) | (y[:, None] == torch.arange(len(self.stds)))
            log_r = log_r.masked_fill(~keep, -math.inf).log_softmax(-1)
        shrink = self.stds**2 / (self.stds**2 + sigma[:, None] ** 2)  # (B, K)
        xf = x.flatten(1).double()[:, None]  # (B, 1, D)
        x0_k = self.means + shrink[..., None] * (xf - self.means)  # (B, K, D)
        x0 = (log_r.exp()[..., None] * x0_k).sum(1)
        return x0.to(x.dtype).reshape(x.shape)
