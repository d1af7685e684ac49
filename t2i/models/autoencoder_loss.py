"""The autoencoders' training loss: reconstruction (L1/L2) + KL or VQ loss + PatchGAN hinge loss
with the adaptive weight, switched on after `disc_start` steps (Esser et al. 2021, VQGAN; LDM).

The training recipe calls, per step (`ae` either autoencoder, `loss_fn = AutoencoderLoss(cfg)`):

    out = ae(x)                                             # AutoencoderOutput
    g_loss, logs = loss_fn.generator_loss(x, out, step, ae.last_layer)
    opt_ae.zero_grad(); g_loss.backward(); opt_ae.step()
    if loss_fn.disc_active(step):                           # g_loss also left grads in D: zero them
        opt_disc.zero_grad()                                # opt_disc over loss_fn.parameters()
        d_loss, d_logs = loss_fn.discriminator_loss(x, out.x_rec.detach(), step)
        d_loss.backward(); opt_disc.step()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.autoencoder import AutoencoderOutput


@dataclass
class AutoencoderLossConfig:
    reconstruction: str = "l1"  # "l1" or "l2"
    kl_weight: float = 1e-6  # on the KL summed over latent dims, per pixel element (as LDM)
    disc_weight: float = 0.5  # times the adaptive weight
    disc_start: int = 5000  # steps before the GAN loss switches on
    disc_channels: int = 64
    disc_layers: int = 3

    def __post_init__(self) -> None:
        if self.reconstruction not in ("l1", "l2"):
            raise ValueError(f"reconstruction {self.reconstruction!r}; choose from ['l1', 'l2']")


class PatchDiscriminator(nn.Module):
    """PatchGAN: strided convs giving one real/fake logit per patch (Isola et al. 2017)."""

    def __init__(self, in_ch: int = 3, ch: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_ch, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, layers + 1):
            out = ch * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(ch * min(2 ** (i - 1), 8), out, 4, stride, 1)]
            mods += [nn.GroupNorm(min(32, out // 4), out), nn.LeakyReLU(0.2)]
        mods.append(nn.Conv2d(ch * min(2**layers, 8), 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _item(x: torch.Tensor) -> float:
    return float(x.detach())


def reconstruction_loss(x: torch.Tensor, x_rec: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    return F.l1_loss(x_rec, x) if kind == "l1" else F.mse_loss(x_rec, x)


def adaptive_weight(rec: torch.Tensor, g: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """||grad rec|| / ||grad g|| at the decoder's last layer (VQGAN eq. 7), clamped to [0, 1e4]."""
    g_rec = torch.autograd.grad(rec, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, 1e4).detach()


class AutoencoderLoss(nn.Module):
    """Reconstruction + KL (or VQ commitment) + hinge PatchGAN with adaptive weight (LDM/VQGAN)."""

    def __init__(self, config: AutoencoderLossConfig, in_channels: int = 3):
        super().__init__()
        self.config = config
        self.discriminator = PatchDiscriminator(
            in_channels, config.disc_channels, config.disc_layers
        )

    def disc_active(self, step: int) -> bool:
        return step >= self.config.disc_start

    def generator_loss(
        self, x: torch.Tensor, out: AutoencoderOutput, step: int, last_layer: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        rec = reconstruction_loss(x, out.x_rec, c.reconstruction)
        loss, logs = rec, {"rec": _item(rec)}
        if out.posterior is not None:
            kl = out.posterior.kl().mean() / x[0].numel()  # per pixel element, like rec
            loss = loss + c.kl_weight * kl
            logs["kl"] = _item(kl)
        if out.vq_loss is not None:
            loss = loss + out.vq_loss
            logs["vq"] = _item(out.vq_loss)
        if self.disc_active(step) and torch.is_grad_enabled():
            g = -self.discriminator(out.x_rec).mean()
            weight = c.disc_weight * adaptive_weight(rec, g, last_layer)
            loss = loss + weight * g
            logs.update(g=_item(g), disc_weight=_item(weight))
        logs["loss"] = _item(loss)
        return loss, logs

    def discriminator_loss(
        self, x: torch.Tensor, x_rec: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss: mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec))), halved."""
        real, fake = self.discriminator(x), self.discriminator(x_rec.detach())
        d = 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())
        return d, {"d_loss": _item(d), "d_real": _item(real.mean()), "d_fake": _item(fake.mean())}


# ---------------------------------------------------------------- patch "autoencoder"
