"""AlignDRAW (Mansimov et al. 2016): a recurrent VAE that draws on a canvas in T steps, each step
attending over the caption's words and writing through a grid of Gaussian filters.

At step t (h^gen_0 = h^infer_0 = 0, canvas c_0 = 0):

    s_t     = align(h^gen_{t-1}, words)                  attention over the caption's states
    r_t     = read(x, x - mean(c_{t-1}), h^gen_{t-1})    (training only: the inference network)
    h^inf_t = LSTM_infer(h^inf_{t-1}, [r_t, h^gen_{t-1}])
    Q(z_t)  = N(mu(h^inf_t), sigma(h^inf_t))             P(z_t) = N(mu(h^gen_{t-1}), sigma(...))
    h^gen_t = LSTM_gen(h^gen_{t-1}, [z_t, s_t])
    c_t     = c_{t-1} + write(h^gen_t)

with mu(h) = tanh(W_mu h) and sigma(h) = exp(tanh(W_sigma h)) for both Q and the learnt prior P,
as the paper states them. The image's mean is the canvas c_T itself (drawn clamped to [-1, 1]);
the likelihood of 8-bit pixels around it is the family's (t2i/draw_pipeline.py: a discretised
Gaussian with one learnt std per channel, `log_std` here). The network knows nothing of text
encoders: it reads per-word states (B, L, D) and their mask, as the UNet's cross-attention does.
Filters start as wide as their stride (`smooth_filters`), so the first glimpses see the whole
image.

Attention (Gregor et al. 2015): five numbers from a state give the grid's centre (g_x, g_y), its
stride delta, the filters' variance sigma^2 and an intensity gamma; F_x (N, W) and F_y (N, H)
hold N Gaussians each, every row normalised. read(x) = gamma F_y x F_x^T (N x N);
write(w) = F_y^T w F_x / gamma (H x W).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn


@dataclass
class DrawConfig:
    image_size: int = 32
    image_channels: int = 1
    steps: int = 16  # T: glimpses read and patches written
    read_n: int = 6  # N of the read grid (N x N per channel, of x and of the error image)
    write_n: int = 8  # N of the write grid
    z_dim: int = 32  # latent per step
    hidden: int = 256  # both LSTMs
    context_dim: int = 256  # width of the caption's per-word states
    align_dim: int = 128  # the alignment model's tanh layer

    def __post_init__(self) -> None:
        if self.read_n > self.image_size or self.write_n > self.image_size:
            raise ValueError(
                f"read_n {self.read_n} / write_n {self.write_n} must be at most image_size "
                f"{self.image_size}"
            )

    @classmethod
    def preset(cls, name: str, **overrides) -> DrawConfig:
        if name not in DRAW_PRESETS:
            raise ValueError(f"unknown draw preset {name!r}; choose from {sorted(DRAW_PRESETS)}")
        return replace(DRAW_PRESETS[name], **overrides)


DRAW_PRESETS: dict[str, DrawConfig] = {
    "tiny": DrawConfig(
        image_size=16,
        steps=4,
        read_n=3,
        write_n=4,
        z_dim=4,
        hidden=32,
        context_dim=32,
        align_dim=16,
    ),  # fmt: skip
    "fashion": DrawConfig(image_size=32, image_channels=1, steps=16, read_n=6, write_n=8),
    "shapes": DrawConfig(
        image_size=64, image_channels=3, steps=16, read_n=8, write_n=12, z_dim=32, hidden=256
    ),
}


class Filterbank(NamedTuple):
    fy: torch.Tensor  # (B, N, H)
    fx: torch.Tensor  # (B, N, W)
    gamma: torch.Tensor  # (B,)


def gaussian_filters(centre, delta, var, n: int, size: int) -> torch.Tensor:
    """(B,) centres, strides and variances in pixels -> (B, n, size): row i is a Gaussian at
    centre + (i - n/2 + 0.5) * delta over the pixel positions 0..size-1, summing to 1."""
    offsets = torch.arange(n, dtype=centre.dtype, device=centre.device) - n / 2 + 0.5
    mu = centre[:, None] + offsets * delta[:, None]  # (B, n)
    pos = torch.arange(size, dtype=centre.dtype, device=centre.device)
    f = -((pos - mu[..., None]) ** 2) / (2 * var[:, None, None])
    return torch.softmax(f, dim=-1)  # exp normalised over the pixels, stably


def filterbank(params: torch.Tensor, n: int, height: int, width: int) -> Filterbank:
    """(B, 5) raw numbers (g~x, g~y, log sigma^2, log delta~, log gamma) -> the filter bank, as
    DRAW's equations place them: the centre's (-1, 1) spans the image, delta~ = 1 spans it."""
    gx_, gy_, log_var, log_delta, log_gamma = params.float().unbind(-1)
    gx = (width + 1) / 2 * (gx_ + 1)
    gy = (height + 1) / 2 * (gy_ + 1)
    delta = (max(height, width) - 1) / max(n - 1, 1) * log_delta.exp()
    var = log_var.exp()
    # DRAW's 1-based centres -> 0-based pixel positions
    fx = gaussian_filters(gx - 1, delta, var, n, width)
    fy = gaussian_filters(gy - 1, delta, var, n, height)
    return Filterbank(fy, fx, log_gamma.exp())


def read(images: torch.Tensor, bank: Filterbank) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, N, N): gamma F_y x F_x^T."""
    glimpse = bank.fy[:, None] @ images @ bank.fx[:, None].transpose(-1, -2)
    return glimpse * bank.gamma[:, None, None, None]


def write(patch: torch.Tensor, bank: Filterbank) -> torch.Tensor:
    """(B, C, N, N) -> (B, C, H, W): F_y^T w F_x / gamma."""
    patch = patch / bank.gamma[:, None, None, None]  # on the patch: N^2 divisions, not H W
    return bank.fy[:, None].transpose(-1, -2) @ patch @ bank.fx[:, None]


def gaussian_kl(mu_q, sigma_q, mu_p, sigma_p) -> torch.Tensor:
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) elementwise, in nats."""
    ratio = (sigma_q / sigma_p) ** 2
    return 0.5 * (ratio + ((mu_q - mu_p) / sigma_p) ** 2 - 1 - ratio.log())


class GaussianHead(nn.Module):
    """h -> (mu, sigma) = (tanh(W_mu h), exp(tanh(W_sigma h))), the paper's forms."""

    def __init__(self, hidden: int, z_dim: int):
        super().__init__()
        self.proj = nn.Linear(hidden, 2 * z_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, s = self.proj(h).chunk(2, dim=-1)
        return mu.tanh(), s.tanh().exp()


class Alignment(nn.Module):
    """alpha_k proportional to exp(v^T tanh(U h_k + W h^gen + b)) over the real words; the
    sentence vector is sum_k alpha_k h_k."""

    def __init__(self, context_dim: int, hidden: int, align_dim: int):
        super().__init__()
        self.words = nn.Linear(context_dim, align_dim)
        self.state = nn.Linear(hidden, align_dim, bias=False)
        self.score = nn.Linear(align_dim, 1, bias=False)

    def weights(self, keys: torch.Tensor, mask: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """keys: (B, L, A) = U h_k + b, computed once per caption; -> (B, L), padding 0."""
        scores = self.score(torch.tanh(keys + self.state(h)[:, None]))[..., 0]
        return scores.float().masked_fill(~mask, float("-inf")).softmax(-1)


def image_mean(canvas: torch.Tensor) -> torch.Tensor:
    """The likelihood's mean is the canvas itself: the discretised Gaussian's end bins take a
    mean past -1 or 1, so nothing needs squashing. Through tanh, a white background drove the
    canvas to saturation where no gradient reaches the objects on it, and `shapes` stopped at
    drawing backgrounds (docs/history.md, "AlignDRAW")."""
    return canvas


def smooth_filters(layer: nn.Linear, n: int, size: int) -> None:
    """Start the filters as wide as their stride (sigma = stride / 2): a grid spread over the
    image then reads and writes all of it. At sigma 1 a 12-point grid over 64 px sees one pixel
    in five, and small objects between the points give no gradient to move it (the first
    `shapes` run drew a grey background only)."""
    stride = (size - 1) / max(n - 1, 1)
    with torch.no_grad():
        layer.bias[2] = 2 * math.log(max(stride / 2, 0.5))


class StepOut(NamedTuple):
    canvas: torch.Tensor
    kl: torch.Tensor  # (B,) nats of this step (0 when sampling)
    alpha: torch.Tensor  # (B, L) attention over the words


class DrawNet(nn.Module):
    """The AlignDRAW network: `forward(x, ...)` encodes and reconstructs (training, the ELBO),
    `sample(...)` draws from the learnt prior."""

    def __init__(self, config: DrawConfig):
        super().__init__()
        self.config = c = config
        read_dim = 2 * c.image_channels * c.read_n**2
        self.infer = nn.LSTMCell(read_dim + c.hidden, c.hidden)
        self.gen = nn.LSTMCell(c.z_dim + c.context_dim, c.hidden)
        self.posterior = GaussianHead(c.hidden, c.z_dim)
        self.prior = GaussianHead(c.hidden, c.z_dim)
        self.align = Alignment(c.context_dim, c.hidden, c.align_dim)
        self.read_params = nn.Linear(c.hidden, 5)
        self.write_params = nn.Linear(c.hidden, 5)
        self.write_patch = nn.Linear(c.hidden, c.image_channels * c.write_n**2)
        self.log_std = nn.Parameter(torch.full((c.image_channels,), -1.0))  # the likelihood's
        smooth_filters(self.read_params, c.read_n, c.image_size)
        smooth_filters(self.write_params, c.write_n, c.image_size)

    def empty(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.config
        zeros = like.new_zeros(batch, c.hidden)
        canvas = like.new_zeros(batch, c.image_channels, c.image_size, c.image_size)
        return zeros, zeros, canvas

    def written(self, h: torch.Tensor) -> torch.Tensor:
        c = self.config
        bank = filterbank(self.write_params(h), c.write_n, c.image_size, c.image_size)
        patch = self.write_patch(h).float().view(-1, c.image_channels, c.write_n, c.write_n)
        return write(patch, bank)

    def drawn(self, keys, context, mask, z, h_gen, cell_gen, canvas):
        """One step of the generative side, shared by training and sampling: attend over the
        words from h^gen_{t-1}, advance LSTM_gen on [z_t, s_t], write onto the canvas.
        -> (h^gen_t, its cell, c_t, alpha_t)."""
        alpha = self.align.weights(keys, mask, h_gen)
        sentence = (alpha[..., None].to(context.dtype) * context).sum(1)
        h_gen, cell_gen = self.gen(torch.cat([z, sentence], 1), (h_gen, cell_gen))
        return h_gen, cell_gen, canvas + self.written(h_gen), alpha

    def forward(self, x, context, mask, noise, trace: list | None = None):
        """x (B, C, H, W) in [-1, 1], context (B, L, D), mask (B, L), noise (B, T, z_dim)
        standard normals -> (mean (B, C, H, W) = c_T, KL (B,) summed over the steps).
        `trace`, when given, collects each step's StepOut."""
        c = self.config
        keys = self.align.words(context)
        h_gen, cell_gen, canvas = self.empty(x.shape[0], x)
        h_inf, cell_inf = h_gen, cell_gen
        kl = x.new_zeros(x.shape[0])
        for t in range(c.steps):
            bank = filterbank(self.read_params(h_gen), c.read_n, c.image_size, c.image_size)
            glimpse = torch.cat([read(x, bank), read(x - image_mean(canvas), bank)], 1).flatten(1)
            h_inf, cell_inf = self.infer(torch.cat([glimpse, h_gen], 1), (h_inf, cell_inf))
            mu_q, sigma_q = self.posterior(h_inf)
            mu_p, sigma_p = self.prior(h_gen)
            z = mu_q + sigma_q * noise[:, t]
            step_kl = gaussian_kl(mu_q.float(), sigma_q.float(), mu_p.float(), sigma_p.float())
            kl = kl + step_kl.sum(-1)
            h_gen, cell_gen, canvas, alpha = self.drawn(
                keys, context, mask, z, h_gen, cell_gen, canvas
            )
            if trace is not None:
                trace.append(StepOut(canvas, step_kl.sum(-1), alpha))
        return image_mean(canvas), kl

    def sample(self, context, mask, noise, callback=None) -> torch.Tensor:
        """noise (B, T, z_dim) standard normals -> the mean image c_T (B, C, H, W), each
        z_t from the learnt prior; callback(StepOut) after each step."""
        keys = self.align.words(context)
        h_gen, cell_gen, canvas = self.empty(context.shape[0], context.float())
        for t in range(self.config.steps):
            mu_p, sigma_p = self.prior(h_gen)
            z = mu_p + sigma_p * noise[:, t]
            h_gen, cell_gen, canvas, alpha = self.drawn(
                keys, context, mask, z, h_gen, cell_gen, canvas
            )
            if callback is not None:
                callback(t, StepOut(canvas, canvas.new_zeros(len(canvas)), alpha))
        return image_mean(canvas)
