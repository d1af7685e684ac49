"""Autoencoder recipe: a KL autoencoder with L1 + KL + PatchGAN loss (Rombach et al. 2022, LDM),
or, when the model config is a `VQConfig`, a VQ autoencoder with L1 + commitment loss (+ the same
PatchGAN, VQGAN) whose codes token models learn (`t2i train autoregressive`).

The generator and discriminator share one optimizer step: the generator's GAN term runs the
discriminator with its parameters frozen, and the discriminator's hinge loss sees the
reconstruction detached, so one backward gives each part its own gradient.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from t2i.checkpoint import DTYPES, save_model_folder
from t2i.images import image_grid
from t2i.models.autoencoder import (
    AutoencoderConfig,
    AutoencoderKL,
    AutoencoderOutput,
    AutoencoderVQ,
    VQConfig,
    latent_stats,
)
from t2i.models.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from t2i.models.autoencoder_patch import AutoencoderPatch, PatchConfig
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import load_frozen_autoencoder, open_dataset
from t2i.training.export import model_weights, nested_config, training_card
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick


@dataclass
class AutoencoderRecipeConfig:
    model: AutoencoderConfig | PatchConfig = field(
        default_factory=lambda: AutoencoderConfig.preset("f4")
    )
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    image_size: int = 64
    data_length: int = 100_000  # items drawn from procedural sources (shapes)
    stats_images: int = 256  # images that set the latent scale/shift at export
    # "all", or "decoder": the encoder frozen (needs --init), so the latents a diffusion model was
    # trained on stay what they were while the decoder draws them better (SD's ft-MSE decoder)
    train: str = "all"
    channels_last: bool = True  # NHWC convolutions, as its runs trained (no A/B recorded)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=20_000, batch_size=16))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=4.5e-4, ema_decay=0.999))


def _tiny() -> AutoencoderRecipeConfig:
    """For tests: a few thousand parameters on 16x16 images; the GAN term starts at step 2."""
    return AutoencoderRecipeConfig(
        model=AutoencoderConfig.preset("tiny"),
        loss=AutoencoderLossConfig(disc_start=2, disc_channels=8, disc_layers=1),
        image_size=16,
        data_length=64,
        stats_images=8,
        loop=LoopConfig(steps=8, batch_size=4, log_every=1, ckpt_every=4, sample_every=4),
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
    )


def _fashion() -> AutoencoderRecipeConfig:
    """Fashion-MNIST 32 px grey through the default f4 KL autoencoder."""
    cfg = AutoencoderRecipeConfig(image_size=32)
    cfg.model.in_channels = 1
    return cfg


def _shapes_vq() -> AutoencoderRecipeConfig:
    """64x64 shapes -> 16x16 codes of 512: flat colours need no GAN term to stay sharp. L2, not
    L1: with L1 the codes had not learnt the objects' colours after 250 steps (every object came
    back in one mean brown), with L2 every colour was right by then."""
    return AutoencoderRecipeConfig(
        model=VQConfig.preset("shapes"),
        loss=AutoencoderLossConfig(reconstruction="l2", disc_start=10**9),
        loop=LoopConfig(steps=3000, batch_size=32, ckpt_every=250, sample_every=500),
        optim=OptimConfig(lr=1e-3, warmup_steps=100, ema_decay=0.99),
    )


def _fashion_vq() -> AutoencoderRecipeConfig:
    """Fashion-MNIST 32 px grey -> 8x8 codes of 512 for the autoregressive family: shapes_vq's
    loss (L2, no GAN term) at lr 3e-4, where shapes_vq's 1e-3 jumped."""
    return AutoencoderRecipeConfig(
        model=VQConfig.preset("fashion"),
        loss=AutoencoderLossConfig(reconstruction="l2", disc_start=10**9),
        image_size=32,
        loop=LoopConfig(steps=2000, batch_size=32, ckpt_every=250, sample_every=500),
        optim=OptimConfig(lr=3e-4, warmup_steps=100, ema_decay=0.99),
    )


def _shapes_grid() -> AutoencoderRecipeConfig:
    """64x64 shapes -> 3x3x8 KL latents, one per cell of the scenes' grid: the diffusion model in
    them draws the whole layout, shapes included, and the decoder renders it. Read and drawn at
    48 px (`resample` 0.75), so each level's grid lines up with the cells (16 px down to 1
    latent) and what is learnt for one cell holds for all nine. L2 and no GAN term, as shapes_vq;
    2.7 M parameters. lr 3e-4: at 1e-3 its loss spiked every 100-200 steps and stalled."""
    return AutoencoderRecipeConfig(
        model=AutoencoderConfig(
            channels=(32, 64, 64, 96, 96), latent_channels=8, groups=8, resample=0.75
        ),
        loss=AutoencoderLossConfig(reconstruction="l2", disc_start=10**9),
        loop=LoopConfig(steps=4000, batch_size=32, ckpt_every=250, sample_every=500),
        optim=OptimConfig(lr=3e-4, warmup_steps=200, ema_decay=0.99),
    )


def _patch() -> AutoencoderRecipeConfig:
    """The bundled `shapes` autoencoder: nothing learnt, 64 px read at 48 px, 16 px patches.

    3x3x768 latents, one per cell of the shapes grid (`PatchConfig`); `t2i train autoencoder`
    writes its folder at once."""
    return AutoencoderRecipeConfig(model=PatchConfig())


def _emoji() -> AutoencoderRecipeConfig:
    """The bundled `emoji` autoencoder: KL, 64x64x3 -> 16x16x4, 2.7 M, PatchGAN from step 1,200.

    Channels 32/64/128, L1 + KL 1e-6 + the hinge GAN term (adaptive weight); channels-last bf16,
    2,400 steps of 16 (docs/training/emoji_ae/config.json)."""
    return AutoencoderRecipeConfig(
        model=AutoencoderConfig(channels=(32, 64, 128), groups=16),
        loss=AutoencoderLossConfig(disc_start=1200, disc_channels=32),
        loop=LoopConfig(
            steps=2400, batch_size=16, bf16=True, log_every=50, ckpt_every=200, sample_every=400
        ),
        optim=OptimConfig(lr=4.5e-4, warmup_steps=100, ema_decay=0.999),
    )


def _tiny_vq() -> AutoencoderRecipeConfig:
    """For tests: the tiny preset with a VQ autoencoder."""
    cfg = _tiny()
    cfg.model = VQConfig.preset("tiny")
    return cfg


CONFIG_PRESETS = {
    "default": AutoencoderRecipeConfig,
    "emoji": _emoji,
    "fashion": _fashion,
    "fashion_vq": _fashion_vq,
    "patch": _patch,
    "shapes_grid": _shapes_grid,
    "shapes_vq": _shapes_vq,
    "tiny": _tiny,
    "tiny_vq": _tiny_vq,
}


def preset(name: str) -> AutoencoderRecipeConfig:
    return pick("autoencoder", CONFIG_PRESETS, name)


class AutoencoderWithLoss(nn.Module):
    """The trained parameters: the autoencoder and the loss's discriminator."""

    def __init__(self, cfg: AutoencoderRecipeConfig):
        super().__init__()
        vq = isinstance(cfg.model, VQConfig)
        self.ae = AutoencoderVQ(cfg.model) if vq else AutoencoderKL(cfg.model)
        self.loss_fn = AutoencoderLoss(cfg.loss, cfg.model.in_channels)


def build(cfg: AutoencoderRecipeConfig, args: argparse.Namespace) -> Recipe:
    cfg.model.__post_init__()
    cfg.loss.__post_init__()
    init = getattr(args, "init", None)
    if cfg.train not in ("all", "decoder"):
        raise ValueError(f"train {cfg.train!r}; choose from ['all', 'decoder']")
    if cfg.train == "decoder" and not init:
        raise ValueError("train 'decoder' fine-tunes a trained autoencoder: give --init FOLDER")
    start = load_frozen_autoencoder(init)[0] if init else None
    if start is not None:  # the folder's architecture; latent scale/shift are set again at export
        cfg.model = replace(start.config, latent_scale=None, latent_shift=None)
    dataset, channels = open_dataset(args.data, cfg.image_size, cfg.data_length)
    if cfg.model.in_channels != channels:
        raise ValueError(f"model.in_channels {cfg.model.in_channels} != data channels {channels}")
    seed_everything(cfg.loop.seed)
    model = AutoencoderWithLoss(cfg)
    if start is not None:
        model.ae.load_state_dict({k: v.float() for k, v in start.state_dict().items()})
    if cfg.train == "decoder":
        if isinstance(model.ae, AutoencoderVQ):  # its codebook moves with the encoder's outputs
            raise ValueError("train 'decoder' is for KL autoencoders, not VQ ones")
        model.ae.encoder.requires_grad_(False)
    return autoencoder_recipe(cfg, model, dataset, str(args.data))


def autoencoder_recipe(cfg, model: AutoencoderWithLoss, dataset, data_name: str) -> Recipe:
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    fixed = torch.stack([dataset[i]["image"] for i in range(min(8, len(dataset)))])

    def collate(items: list[dict]) -> torch.Tensor:
        return torch.stack([it["image"] for it in items]).contiguous(memory_format=fmt)

    def loss(x: torch.Tensor, rng: StepRNG) -> torch.Tensor:
        return ae_loss(model, x, rng)

    def sample(ema: nn.Module) -> Image.Image:
        rec = reconstruct(ema.ae, fixed)
        return image_grid(torch.cat([fixed, rec.clamp(-1, 1)]), cols=len(fixed))

    def export(ema: nn.Module, folder: Path) -> None:
        export_model(cfg, ema.ae, dataset, folder, data_name)

    public = {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
    return Recipe(
        "autoencoder", model, dataset, collate, loss, sample, export, {**public, "data": data_name}
    )


def export_model(
    cfg,
    ae: nn.Module,
    dataset,
    folder: Path,
    data_name: str,
    dtype: torch.dtype = torch.float32,
    training: dict | None = None,
) -> None:
    """A model folder with autoencoder/, its latent scale and shift set from the data's first
    `stats_images` images."""
    n = min(cfg.stats_images, len(dataset))
    batches = (
        torch.stack([dataset[j]["image"] for j in range(i, min(i + 32, n))])
        for i in range(0, n, 32)
    )
    ae.set_latent_stats(*latent_stats(ae, batches))
    index = {"data": {"source": data_name}, **({"training": training} if training else {})}
    save_model_folder(folder, {"autoencoder": ae}, index, dtype)


def export_checkpoint(found: Path, tensors: dict, meta: dict, out: Path, **kw) -> Path:
    """An autoencoder run's checkpoint -> autoencoder/ (KL or VQ), latent stats from its data
    (`t2i export`). kw: run_dir, dtype, data, ema."""
    recipe = dict(meta["config"]["recipe"])
    recipe.pop("preset", None)  # the preset it started from: the settings are all recorded
    data = recipe.pop("data", None) or kw["data"]
    if not data:
        raise ValueError(f"{found} does not record its data: give it (e.g. --data shapes)")
    vq = "codebook_size" in recipe["model"]
    model_cls = VQConfig if vq else AutoencoderConfig
    cfg = nested_config(AutoencoderRecipeConfig, recipe, str(found), model_cls)
    model = AutoencoderWithLoss(cfg)
    model.load_state_dict(model_weights(tensors, kw["ema"]))
    model = model.to(memory_format=torch.contiguous_format).eval()
    dataset, _ = open_dataset(data, cfg.image_size, cfg.stats_images)
    card = training_card(kw["run_dir"], meta)
    export_model(cfg, model.ae, dataset, out, data, DTYPES[kw["dtype"]], card)
    return out


def fixed_model(cfg: AutoencoderRecipeConfig, out: Path) -> Path | None:
    """A patch autoencoder has no parameters: its model folder is written at once (out/model),
    with no training loop. None for autoencoders that train."""
    if not isinstance(cfg.model, PatchConfig):
        return None
    folder = out / "model"
    index = {"data": {"source": "none: a fixed resize and patch map, nothing learnt"}}
    save_model_folder(folder, {"autoencoder": AutoencoderPatch(cfg.model)}, index)
    return folder


def reconstruct(ae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x -> from_latent(to_latent(x)): the KL posterior's mode, the VQ codes' vectors, or the
    patches (as `t2i eval` reconstructs every kind)."""
    return ae.from_latent(ae.to_latent(x))


def ae_loss(model: AutoencoderWithLoss, x: torch.Tensor, rng: StepRNG) -> torch.Tensor:
    """Generator loss (rec + KL or commitment + adaptive GAN) + discriminator hinge loss."""
    ae, loss_fn = model.ae, model.loss_fn
    if isinstance(ae, AutoencoderVQ):
        out = ae(x)
    else:
        posterior = ae.encode(x)
        z = posterior.mean + posterior.std * rng.randn(*posterior.mean.shape[1:])
        out = AutoencoderOutput(ae.decode(z), posterior, None, None)
    disc = loss_fn.discriminator
    disc.requires_grad_(False)  # the generator's GAN term must not train the discriminator
    g_loss, _ = loss_fn.generator_loss(x, out, rng.step, ae.last_layer)
    disc.requires_grad_(True)
    if not loss_fn.disc_active(rng.step):
        return g_loss
    d_loss, _ = loss_fn.discriminator_loss(x, out.x_rec, rng.step)
    return g_loss + d_loss
