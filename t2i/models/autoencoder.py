"""Autoencoders for latent diffusion and token models (their training loss: autoencoder_loss.py;
the patch autoencoder with nothing to learn: autoencoder_patch.py).

- `AutoencoderKL`: KL-regularised convolutional VAE (Kingma & Welling 2014; Rombach 2022, LDM).
- `AutoencoderVQ`: vector-quantised variant with an EMA codebook (van den Oord et al. 2017, VQ-VAE).

Latents for diffusion: `z = ae.to_latent(x)` ((mode - shift) * scale, per channel),
`x = ae.from_latent(z)`; set scale/shift from data before saving with
`ae.set_latent_stats(*latent_stats(ae, batches))`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.layers import Attention, Downsample, ResBlock, Upsample, check_groups


@dataclass
class AutoencoderConfig:
    in_channels: int = 3
    channels: tuple[int, ...] = (64, 128, 256)  # per level; downsampling factor 2**(len - 1)
    layers_per_block: int = 1  # residual blocks per level
    latent_channels: int = 4
    groups: int = 32  # GroupNorm groups
    mid_attention: bool = True  # self-attention at the lowest resolution
    # != 1: the encoder reads the image resized by this and the decoder draws at that size and
    # resizes back, so every level's grid can line up with a grid in the data: 0.75 turns 64 px
    # scenes on a 3x3 grid into 48 px, whose cells are 16 px, 8, 4, 2 and 1 latent (3x3) down
    resample: float = 1.0
    latent_scale: list[float] | None = None  # per channel, from data (latent_stats); None: 1
    latent_shift: list[float] | None = None  # per channel; None: 0

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.validate()

    def validate(self) -> None:
        if len(self.channels) < 1 or min(self.channels) <= 0:
            raise ValueError(f"channels must be positive, got {self.channels}")
        for ch in self.channels:
            check_groups(ch, self.groups, f"{type(self).__name__}.channels")
        if not 0 < self.resample <= 4:
            raise ValueError(f"resample must be in (0, 4], got {self.resample}")
        for name in ("latent_scale", "latent_shift"):
            v = getattr(self, name)
            if v is not None and len(v) != self.latent_channels:
                raise ValueError(f"{name} has {len(v)} values, expected {self.latent_channels}")

    @property
    def scale(self) -> Fraction:
        """Latent positions per image pixel: resample / 2^(levels - 1)."""
        return Fraction(self.resample).limit_denominator(64) / 2 ** (len(self.channels) - 1)

    @property
    def factor(self) -> int:
        """Image sides must be multiples of this (64 for 3x3 latents at 64 px)."""
        return (1 / self.scale).numerator

    def latent_side(self, side: int) -> int:
        """Latent positions along an image side of `side` pixels."""
        if side % self.factor:
            raise ValueError(
                f"image side {side}: this autoencoder takes multiples of {self.factor}"
            )
        return int(side * self.scale)

    def check_network_factor(self, factor: int) -> None:
        """A network that downsamples its input by `factor` must fit this autoencoder's latents:
        resampled latents (3x3 at 64 px) may have no common divisor but 1."""
        if self.resample != 1 and factor > 1:
            raise ValueError(
                f"a resampling autoencoder's latents (3x3 at 64 px with resample 0.75) take a "
                f"network that does not downsample; this one does by {factor} (give the UNet one "
                "level, patch size 1)"
            )

    @classmethod
    def preset(cls, name: str, **overrides):
        presets = VQ_PRESETS if cls is VQConfig else AE_PRESETS
        if name not in presets:
            raise ValueError(
                f"unknown {cls.__name__} preset {name!r}; choose from {sorted(presets)}"
            )
        return replace(presets[name], **overrides)


@dataclass
class VQConfig(AutoencoderConfig):
    codebook_size: int = 512
    commitment: float = 0.25  # beta in the VQ-VAE loss
    ema_decay: float = 0.99  # codebook EMA decay (VQ-VAE appendix)


AE_PRESETS: dict[str, AutoencoderConfig] = {
    "tiny": AutoencoderConfig(channels=(16, 32), latent_channels=4, groups=8, mid_attention=False),
    "f4": AutoencoderConfig(channels=(64, 128, 128), latent_channels=4),  # 64x64 -> 16x16x4
    "f8": AutoencoderConfig(channels=(64, 128, 256, 256), latent_channels=4),
}
VQ_PRESETS: dict[str, VQConfig] = {
    "tiny": VQConfig(
        channels=(16, 32), latent_channels=8, groups=8, mid_attention=False, codebook_size=64
    ),
    "f4": VQConfig(channels=(64, 128, 128), latent_channels=32, codebook_size=1024),
    # flat-coloured 64x64 scenes -> 16x16 codes; small codes (16 dims) keep the codebook in use
    "shapes": VQConfig(
        channels=(32, 64, 128), latent_channels=16, groups=8, mid_attention=False, codebook_size=512
    ),
    "f8": VQConfig(channels=(64, 128, 256, 256), latent_channels=32, codebook_size=1024),
    # 32x32 grey Fashion-MNIST -> 8x8 codes of 512, the shapes preset's widths
    "fashion": VQConfig(
        in_channels=1,
        channels=(32, 64, 128),
        latent_channels=16,
        groups=8,
        mid_attention=False,
        codebook_size=512,
    ),
}


class MidAttention(nn.Module):
    """Self-attention over all positions with a residual (the LDM autoencoder's middle block)."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.attn = Attention(ch, heads=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.attn(self.norm(x).flatten(2).transpose(1, 2))
        return x + y.transpose(1, 2).reshape(b, c, h, w)


def _mid(ch: int, c: AutoencoderConfig) -> nn.Sequential:
    layers = [ResBlock(ch, ch, c.groups)]
    if c.mid_attention:
        layers += [MidAttention(ch, c.groups), ResBlock(ch, ch, c.groups)]
    return nn.Sequential(*layers)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased when shrinking (an area filter: no aliasing of thin edges); in fp32,
    which the antialiased kernel needs on CPU."""
    y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.to(x.dtype)


class Encoder(nn.Module):
    """x (B, C, H, W) -> (B, out_ch, h, w), h = latent_side(H)."""

    def __init__(self, c: AutoencoderConfig, out_ch: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(c.in_channels, c.channels[0], 3, padding=1)]
        prev = c.channels[0]
        for level, ch in enumerate(c.channels):
            for _ in range(c.layers_per_block):
                layers.append(ResBlock(prev, ch, c.groups))
                prev = ch
            if level < len(c.channels) - 1:
                layers.append(Downsample(ch))
        layers += [_mid(prev, c), nn.GroupNorm(c.groups, prev, eps=1e-6), nn.SiLU()]
        layers.append(nn.Conv2d(prev, out_ch, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.resample = c.resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample != 1:
            x = resize(x, (round(x.shape[-2] * self.resample), round(x.shape[-1] * self.resample)))
        return self.net(x)


class Decoder(nn.Module):
    """z (B, latent, h, w) -> (B, C, H, W), the inverse of Encoder's sizes."""

    def __init__(self, c: AutoencoderConfig):
        super().__init__()
        top = c.channels[-1]
        layers: list[nn.Module] = [nn.Conv2d(c.latent_channels, top, 3, padding=1), _mid(top, c)]
        prev = top
        for level in reversed(range(len(c.channels))):
            ch = c.channels[level]
            for _ in range(c.layers_per_block + 1):
                layers.append(ResBlock(prev, ch, c.groups))
                prev = ch
            if level > 0:
                layers.append(Upsample(ch))
        head = [nn.GroupNorm(c.groups, prev, eps=1e-6), nn.SiLU()]
        self.scale, self.refine = c.scale, None
        if c.resample != 1:  # one more block at the image's own size sharpens what resize blurred
            self.refine = nn.Sequential(ResBlock(prev, prev, c.groups), *head)
        self.net = nn.Sequential(*layers, *([] if self.refine else head))
        self.conv_out = nn.Conv2d(prev, c.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.net(z)
        if self.refine is not None:
            size = (int(z.shape[-2] / self.scale), int(z.shape[-1] / self.scale))
            h = self.refine(resize(h, size))
        return self.conv_out(h)


class DiagonalGaussian:
    """Posterior q(z|x) = N(mean, exp(logvar)); mean/logvar (B, C, h, w)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(
            self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device
        )
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over latent dims -> (B,)."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class AutoencoderOutput(NamedTuple):
    x_rec: torch.Tensor  # (B, C, H, W)
    posterior: DiagonalGaussian | None  # KL autoencoder
    vq_loss: torch.Tensor | None  # VQ autoencoder: commitment loss (scalar)
    codes: torch.Tensor | None  # VQ autoencoder: (B, h, w) code indices


class _LatentScaling(nn.Module):
    """Per-channel latent scale/shift stored in the config, applied by to_latent / from_latent."""

    config: AutoencoderConfig

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        scale = torch.tensor(c.latent_scale or [1.0] * c.latent_channels)
        shift = torch.tensor(c.latent_shift or [0.0] * c.latent_channels)
        return (
            scale.to(z.device, z.dtype)[None, :, None, None],
            shift.to(z.device, z.dtype)[None, :, None, None],
        )

    def scale_latent(self, z: torch.Tensor) -> torch.Tensor:
        scale, shift = self._stats(z)
        return (z - shift) * scale

    def unscale_latent(self, z: torch.Tensor) -> torch.Tensor:
        scale, shift = self._stats(z)
        return z / scale + shift

    def set_latent_stats(self, scale: list[float], shift: list[float]) -> None:
        self.config = replace(self.config, latent_scale=list(scale), latent_shift=list(shift))

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the decoder's last layer: the adaptive GAN weight is measured here."""
        return self.decoder.conv_out.weight


class AutoencoderKL(_LatentScaling):
    """KL-regularised VAE: encode(x) -> DiagonalGaussian, decode(z) -> x."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config, 2 * config.latent_channels)
        self.decoder = Decoder(config)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """x (B, C, H, W) in [-1, 1] -> posterior over (B, latent, H/f, W/f)."""
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        posterior = self.encode(x)
        return AutoencoderOutput(self.decode(posterior.sample(generator)), posterior, None, None)

    def to_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Image -> scaled diffusion latent (posterior mode; a sample if a generator is given)."""
        post = self.encode(x)
        return self.scale_latent(post.mode() if generator is None else post.sample(generator))

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(self.unscale_latent(z))


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with an EMA-updated codebook (VQ-VAE, appendix A.1).

    Two guards against unused codes (codebook collapse): the first training batch sets the
    codebook to encoder outputs, and a code chosen less than `restart_below` times per batch (EMA
    count) is moved to the batch vector farthest from every code (deterministic, so a resumed run
    repeats it; a k-means++-like step, as Jukebox restarts dead codes). Buffers are part of
    the state dict, so a saved model resumes its codebook statistics.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        decay: float = 0.99,
        beta: float = 0.25,
        restart_below: float = 1.0,
    ):
        super().__init__()
        self.decay, self.beta, self.eps, self.restart_below = decay, beta, 1e-5, restart_below
        embed = torch.randn(codebook_size, dim) * 0.1
        self.register_buffer("codebook", embed)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, D, h, w) -> z_q (straight-through), commitment loss, codes (B, h, w)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()
        learning = self.training and torch.is_grad_enabled()  # sample grids must not move codes
        # fp32 even under bf16 autocast: bf16 distances picked another code for 13% of vectors
        # (a half-trained shapes VQ), which blurred the codes' colours into one mean colour
        with torch.autocast(z.device.type, enabled=False):
            if learning and not bool(self.initialised):
                self._init_from(flat.detach())
            dist = self._distances(flat)
            codes = dist.argmin(1)
            if learning:
                self._ema_update(flat.detach(), codes, dist.detach().min(1).values)
        z_q = self.codebook[codes].view(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype)
        loss = self.beta * F.mse_loss(z, z_q.detach())  # codebook moves by EMA, not by gradient
        z_q = z + (z_q - z).detach()
        return z_q, loss, codes.view(b, h, w)

    def _distances(self, flat: torch.Tensor) -> torch.Tensor:
        c = self.codebook
        return flat.pow(2).sum(1, keepdim=True) - 2 * flat @ c.t() + c.pow(2).sum(1)[None]

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        """Codes = evenly spaced vectors of the first batch (repeated if the batch is smaller)."""
        k = self.codebook.shape[0]
        idx = torch.arange(k) * len(flat) // k if len(flat) >= k else torch.arange(k) % len(flat)
        self.codebook.copy_(flat[idx])
        self.embed_sum.copy_(flat[idx])
        self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor, nearest: torch.Tensor) -> None:
        onehot = F.one_hot(codes, self.codebook.shape[0]).type(flat.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        dead = (self.cluster_size < self.restart_below).nonzero().flatten()
        if len(dead):
            far = nearest.topk(min(len(dead), len(flat))).indices
            dead = dead[: len(far)]
            self.embed_sum[dead] = flat[far]
            self.cluster_size[dead] = 1.0
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.eps) / (n + len(self.cluster_size) * self.eps) * n
        self.codebook.copy_(self.embed_sum / size[:, None])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) -> z_q (B, D, h, w), for token models that generate codes."""
        return self.codebook[codes].permute(0, 3, 1, 2)


def code_usage(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of codes used in a batch and the perplexity of their histogram."""
    counts = torch.bincount(codes.flatten(), minlength=codebook_size).float()
    p = counts / counts.sum()
    perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum())
    return {"used": float((counts > 0).float().mean()), "perplexity": float(perplexity)}


class AutoencoderVQ(_LatentScaling):
    """VQ autoencoder: encode(x) -> (z_q, loss, codes), decode(z_q) -> x."""

    def __init__(self, config: VQConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config, config.latent_channels)
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.latent_channels, config.ema_decay, config.commitment
        )
        self.decoder = Decoder(config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.quantizer(self.encoder(x))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_q)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode(self.quantizer.lookup(codes))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        z_q, loss, codes = self.encode(x)
        return AutoencoderOutput(self.decode(z_q), None, loss, codes)

    def to_latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.scale_latent(self.encode(x)[0])

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(self.unscale_latent(z))


@torch.no_grad()
def latent_stats(ae: nn.Module, batches) -> tuple[list[float], list[float]]:
    """Per-channel (scale, shift) = (1 / std, mean) of unscaled latents over image batches."""
    zs = []
    for x in batches:
        z = ae.encode(x)
        zs.append((z.mode() if isinstance(z, DiagonalGaussian) else z[0]).float())
    z = torch.cat(zs).transpose(0, 1).flatten(1)  # (C, N)
    std = z.std(1).clamp_min(1e-6)
    return (1.0 / std).tolist(), z.mean(1).tolist()


# ---------------------------------------------------------------- losses
