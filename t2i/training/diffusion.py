"""Diffusion recipe: a text-conditioned UNet trained through a denoiser's own loss.

Pixel space (shapes 64x64, fashion 32x32) or latent space (`--autoencoder DIR`). Text from the
frozen pretrained encoder, embeddings cached by caption text, or (`--text_encoder trained`) from a
small word-level transformer trained with the UNet from scratch (as GLIDE trains its text
transformer): the frozen sentence encoder barely separates "left" from "right" (docs/history.md,
"Why position fails: the probe"). Captions are dropped to "" with probability `caption_dropout` so
the model also learns the unconditional prediction for classifier-free guidance (Ho & Salimans
2022).

The configuration and presets (`CONFIG_PRESETS`, `SHIPPED`: the bundled models as the stages that
made them) are in t2i/training/diffusion_config.py. The sample grid is drawn by a `Pipeline` over
the live EMA networks with the model_index.json that export writes: what the exported folder draws.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from t2i.cascade import low_res_condition
from t2i.checkpoint import (
    DTYPES,
    INDEX_NAME,
)
from t2i.data.balance import GroupBalanced, folder_groups
from t2i.images import image_grid, shrink
from t2i.models.text_encoder import TextTransformer, build_vocab
from t2i.models.unet import UNet
from t2i.samplers import get_sampler
from t2i.training.data import (
    TRAINED,
    TextCache,
    first_captions,
    first_items,
    latent_dataset,
    load_frozen_autoencoder,
    open_dataset,
    report_unknown_words,
    text_condition,
)
from t2i.training.diffusion_config import (  # noqa: F401
    CONFIG_PRESETS,
    SHIPPED,
    DiffusionRecipeConfig,
    preset,
)
from t2i.training.diffusion_init import adopt, init_text, init_unet  # noqa: F401 (adopt: --init)
from t2i.training.diffusion_model import (
    TextAndUNet,
    export_model,
    generate,
    make_denoiser,
    recipe_schedule,
    split,
)
from t2i.training.diffusion_vdm import (
    LearnedSchedule,
    bound_loss_fn,
    check_learned,
    with_schedule,
)
from t2i.training.export import (
    add_base,
    model_weights,
    nested_config,
    training_card,
)

# CONFIG_PRESETS, SHIPPED and preset are this recipe's interface to the training CLI
from t2i.training.grids import prompt_grid
from t2i.training.loop import Recipe, StepRNG, seed_everything

TIMESTEPS = ("uniform", "logit_normal")


def training_sigmas(cfg: DiffusionRecipeConfig, denoiser: nn.Module):
    """The recipe's sigma draw: fn(batch, generator) -> (batch,) sigmas (see cfg.timesteps)."""
    if cfg.timesteps == "uniform":
        return denoiser.training_sigmas
    sigmas = denoiser.sigmas

    def logit_normal(batch: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.sigmoid(cfg.timestep_mean + torch.randn(batch, generator=generator))
        if cfg.timestep_mix < 1.0:  # (only then: a run without a mix keeps its draws)
            uniform = torch.rand(batch, generator=generator)
            u = torch.where(torch.rand(batch, generator=generator) < cfg.timestep_mix, u, uniform)
        return sigmas[(u * len(sigmas)).long().clamp(max=len(sigmas) - 1)]

    return logit_normal


TRAIN_PARTS = ("all", "text", "text_attention", "unet")


def freeze_parts(model: nn.Module, parts: str) -> None:
    """Leave trainable only what `parts` names (TRAIN_PARTS) of a TextAndUNet."""
    if parts == "all":
        return
    if parts == "unet":  # the text encoder's reading stays what it was trained to be
        model.text.requires_grad_(False)
        return
    model.unet.requires_grad_(False)
    if parts == "text_attention":
        for name, module in model.unet.named_modules():
            if name.endswith("attn2"):
                module.requires_grad_(True)


def check(cfg: DiffusionRecipeConfig) -> None:
    make_denoiser(cfg, nn.Identity())  # parameterisation, schedule, sigma_data: before any work
    if cfg.timesteps not in TIMESTEPS:
        raise ValueError(f"unknown timesteps {cfg.timesteps!r}; choose from {list(TIMESTEPS)}")
    if cfg.timesteps != "uniform" and cfg.parameterisation == "edm":
        raise ValueError("timesteps applies to the discrete schedules; edm draws its own sigmas")
    if not 0.0 < cfg.timestep_mix <= 1.0:
        raise ValueError(f"timestep_mix {cfg.timestep_mix} must be in (0, 1]")
    if cfg.timestep_mix < 1.0 and cfg.timesteps != "logit_normal":
        raise ValueError(
            "timestep_mix < 1 mixes logit_normal draws with uniform ones: it needs "
            f"timesteps logit_normal, not {cfg.timesteps!r}"
        )
    get_sampler(cfg.sampler)
    lo, hi = cfg.guidance_interval or (0.0, 1.0)
    if not 0 <= lo < hi:
        raise ValueError(
            f"guidance_interval {cfg.guidance_interval} must be (sigma_lo, sigma_hi) with "
            "0 <= sigma_lo < sigma_hi, or none"
        )
    if not 0.0 <= cfg.caption_dropout < 1.0:
        raise ValueError(f"caption_dropout {cfg.caption_dropout} must be in [0, 1)")
    if cfg.text_encoder == TRAINED:
        cfg.text_model.__post_init__()
    check_low_res(cfg)
    if cfg.data_size and cfg.data_size <= cfg.image_size:
        raise ValueError(
            f"data_size {cfg.data_size} must be larger than image_size {cfg.image_size} "
            "(the data is shrunk to image_size), or 0"
        )
    check_variance(cfg)
    if cfg.train_parts not in TRAIN_PARTS:
        raise ValueError(
            f"unknown train_parts {cfg.train_parts!r}; choose from {list(TRAIN_PARTS)}"
        )
    if cfg.train_parts != "all" and cfg.text_encoder != TRAINED:
        raise ValueError(
            f"train_parts {cfg.train_parts!r} chooses between the UNet and a trained text encoder: "
            f"it needs --text_encoder trained, not the frozen {cfg.text_encoder!r} (with a frozen "
            f"encoder, 'all' trains the UNet alone)"
        )
    check_learned(cfg)
    cfg.model.__post_init__()  # overrides may have made the UNet config inconsistent


def check_variance(cfg: DiffusionRecipeConfig) -> None:
    """A learned-variance UNet outputs the mean's C channels and v's C: model.out_channels is
    2C (set here when not given, so the run's config records it)."""
    if cfg.variance != "learned":
        return
    wanted = 2 * cfg.model.in_channels
    if cfg.model.out_channels is None:
        cfg.model.out_channels = wanted
    if cfg.model.out_channels != wanted:
        raise ValueError(
            f"variance learned: model.out_channels must be 2 x in_channels = {wanted}, "
            f"got {cfg.model.out_channels}"
        )


def check_low_res(cfg: DiffusionRecipeConfig) -> None:
    """An upscaler's settings agree with each other (a plain model has low_res 0)."""
    if cfg.low_res == 0:
        if cfg.model.cond_channels:
            raise ValueError(
                f"model.cond_channels {cfg.model.cond_channels} needs an input to fill them: "
                "give --low_res N (an upscaler) or leave cond_channels 0"
            )
        return
    if not 0 < cfg.low_res < cfg.image_size:
        raise ValueError(f"low_res {cfg.low_res} must be in [1, image_size {cfg.image_size})")
    if cfg.low_res_noise < 0:
        raise ValueError(f"low_res_noise must be >= 0, got {cfg.low_res_noise}")
    if cfg.sample_prompts:
        raise ValueError(
            "an upscaler's sample grid redraws the data's first images from their small "
            "versions: leave sample_prompts empty"
        )


def check_cond_channels(cfg: DiffusionRecipeConfig, image_channels: int) -> None:
    """An upscaler sees its small *image* (pixels, also for a latent upscaler) on cond_channels."""
    if cfg.low_res and cfg.model.cond_channels != image_channels:
        raise ValueError(
            f"low_res {cfg.low_res}: the UNet sees the small image on cond_channels, so "
            f"model.cond_channels must be the data's image channels ({image_channels}), "
            f"got {cfg.model.cond_channels}"
        )


def build(cfg: DiffusionRecipeConfig, args: argparse.Namespace) -> Recipe:
    """Everything is checked and loaded here, before the first step."""
    return diffusion_recipe(cfg, **build_parts(cfg, args))


def build_parts(cfg: DiffusionRecipeConfig, args: argparse.Namespace) -> dict:
    """The recipe's parts, checked and loaded (diffusion_recipe's keywords): an adapter recipe
    changes them before the recipe is made."""
    check(cfg)
    grey = cfg.model.in_channels == 1 and not getattr(args, "autoencoder", None)
    size = cfg.data_size or cfg.image_size
    dataset, channels = open_dataset(args.data, size, cfg.data_length, 1 if grey else 3)
    check_cond_channels(cfg, channels)
    groups = folder_groups(dataset, cfg.balance)
    ae, ae_record = None, None
    if getattr(args, "autoencoder", None):
        if cfg.data_size:
            raise ValueError("data_size shrinks pixels: drop --autoencoder or data_size")
        ae, ae_record = load_frozen_autoencoder(args.autoencoder)
        ae.config.latent_side(cfg.image_size)  # the data's size fits it
        ae.config.check_network_factor(cfg.model.factor)
        key = {
            "data": args.data,
            "image_size": cfg.image_size,
            "length": cfg.data_length,
            "autoencoder": ae_record["digest"],
        }
        progress = not getattr(args, "no_progress", False)
        dataset = latent_dataset(
            dataset, ae.to_latent, key, cfg.cache_dir, progress, low_res=cfg.low_res
        )
        channels = ae.config.latent_channels
    if groups is not None:
        dataset = GroupBalanced(dataset, groups)
    init = getattr(args, "init", None)
    text = None if cfg.text_encoder == TRAINED else TextCache.load(cfg.text_encoder, cfg.max_tokens)
    text_dim = cfg.text_model.dim if text is None else text.dim
    if cfg.model.context_dim != text_dim:
        raise ValueError(f"model.context_dim {cfg.model.context_dim} != text width {text_dim}")
    if cfg.model.in_channels != channels:
        hint = "; --preset latent is the UNet for an autoencoder's 4 channels" if ae else ""
        raise ValueError(
            f"model.in_channels {cfg.model.in_channels} != data channels {channels} "
            f"(--model.in_channels {channels}{hint})"
        )
    seed_everything(cfg.loop.seed)
    model = net = UNet(cfg.model)
    if text is None:
        captions = first_captions(dataset, cfg.vocab_captions)
        encoder = init_text(cfg, init, captions) if init else None
        if encoder is None:
            if not cfg.text_model.vocab:  # a resumed run has it in its config already
                cfg.text_model.vocab = build_vocab(captions)
            encoder = TextTransformer(cfg.text_model)
        model = TextAndUNet(net, encoder)
        freeze_parts(model, cfg.train_parts)
    model = with_schedule(cfg, model)
    init_record = init_unet(net, init) if init else None
    reader = text.encoder if text is not None else model.text
    report_unknown_words(reader, first_captions(dataset, cfg.vocab_captions))
    return dict(
        model=model,
        dataset=dataset,
        text=text,
        ae=ae,
        data_name=str(args.data),
        ae_record=ae_record,
        init_record=init_record,
    )


def diffusion_recipe(
    cfg,
    model,
    dataset,
    text: TextCache | None,
    ae,
    data_name: str,
    ae_record: dict | None = None,
    init_record: dict | None = None,
) -> Recipe:
    """The recipe over a built UNet (or TextAndUNet): loss, fixed-prompt sample grid, export."""
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    net, encode = split(model, text)
    denoiser = make_denoiser(cfg, net)
    prompts, grid_low = list(cfg.sample_prompts) or None, None
    if cfg.low_res:  # an upscaler's grid: the first images shrunk, then what it draws from them
        firsts = first_items(dataset, 8)
        prompts = [item["caption"] for item in firsts]
        grid_low = torch.stack([small_image(item, cfg.low_res) for item in firsts])
    prompts = prompts or first_captions(dataset, 8)

    def sample(ema: nn.Module) -> Image.Image:
        ema_net, ema_text = split(ema, text)
        schedule = recipe_schedule(cfg, ema)
        images = generate(cfg, ema_net, ema_text, ae, prompts, cfg.sample_seed, grid_low, schedule)
        if grid_low is not None:  # an upscaler's grid: the small images, then its own
            images = torch.cat([enlarge_nearest(grid_low, images.shape[-1]), images])
            return image_grid(images, cols=4)
        return prompt_grid(images, prompts, cols=4)

    def export(ema: nn.Module, folder: Path) -> None:
        ema_net, ema_text = split(ema, text)
        schedule = recipe_schedule(cfg, ema)
        export_model(
            cfg, ema_net, ema_text, ae, folder, data_name, ae_record=ae_record, schedule=schedule
        )

    config = {**public_config(cfg), "data": data_name}
    if ae_record is not None:  # latent runs: export finds the autoencoder again
        config["autoencoder"] = ae_record
    if init_record is not None:  # a fine-tuning run: what it started from
        config["init"] = init_record
    collate = collate_fn(cfg, fmt)
    if isinstance(model, LearnedSchedule):  # the bound, through the schedule it learns
        loss = bound_loss_fn(cfg, encode, denoiser, model.log_snr)
    else:
        loss = loss_fn(cfg, encode, denoiser, training_sigmas(cfg, denoiser))
    return Recipe("diffusion", model, dataset, collate, loss, sample, export, config)


def collate_fn(cfg, fmt: torch.memory_format):
    """Items -> {"x0", "captions"[, "low": an upscaler's small images]}."""

    def collate(items: list[dict]) -> dict:
        x0 = torch.stack([it["latent"] if "latent" in it else it["image"] for it in items])
        if cfg.data_size:
            x0 = shrink(x0, (cfg.image_size, cfg.image_size))
        batch = {
            "x0": x0.contiguous(memory_format=fmt),
            "captions": [it["caption"] for it in items],
        }
        if cfg.low_res:
            batch["low"] = torch.stack([small_image(it, cfg.low_res) for it in items])
        return batch

    return collate


def loss_fn(cfg, encode, denoiser, draw_sigmas):
    """The step's loss: captions dropped for CFG, sigma and noise from the step's generators,
    an upscaler's small image noised (conditioning augmentation); the draws in a fixed order."""

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        x0 = batch["x0"]
        cond = text_condition(batch["captions"], cfg.caption_dropout, encode, rng)
        sigma = rng.draw(draw_sigmas)
        noise = rng.randn(*x0.shape[1:])
        if cfg.low_res:
            low = batch["low"]
            aug = rng.randn(*low.shape[1:])
            scale = rng.rand() * cfg.low_res_noise
            cond["x_cond"] = low_res_condition(low, x0.shape[-2:], aug, scale)
        return denoiser.loss(x0, sigma, noise, **cond).mean()

    return loss


def small_image(item: dict, low_res: int) -> torch.Tensor:
    """An item's image shrunk to low_res x low_res (a latent data set caches it as "low")."""
    if "low" in item:
        return item["low"]
    return shrink(item["image"][None], (low_res, low_res))[0]


def enlarge_nearest(low: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(low, size=(size, size), mode="nearest")


def export_checkpoint(found: Path, tensors: dict, meta: dict, out: Path, **kw) -> Path:
    """A diffusion run's checkpoint -> a model folder (`t2i export`). kw: run_dir, dtype, data,
    ema, base (an upscaler's base model folder, copied in), guidance (the default scale)."""
    recipe = dict(meta["config"]["recipe"])
    recipe.pop("preset", None)  # the preset it started from: the settings are all recorded
    recipe.pop("recipe", None)
    data = recipe.pop("data", None) or kw["data"]
    ae_record = recipe.pop("autoencoder", None)
    recipe.pop("init", None)  # where a fine-tuning run started: not part of the model
    if not data:
        raise ValueError(f"{found} does not record its data: give it (e.g. --data shapes)")
    cfg = nested_config(DiffusionRecipeConfig, recipe, str(found))
    base, guidance = kw.get("base"), kw.get("guidance")
    if guidance is not None:
        if not 0 <= guidance <= 100:
            raise ValueError(f"--guidance must be in [0, 100], got {guidance}")
        cfg.guidance_scale = guidance
    if base is not None and not cfg.low_res:
        run = kw["run_dir"]
        raise ValueError(f"--base {base}: {run} is not an upscaler run (it has no low_res)")
    if base is not None and not (Path(base) / INDEX_NAME).is_file():
        raise FileNotFoundError(f"--base {base}: not a model folder (no {INDEX_NAME})")
    model = net = UNet(cfg.model)
    text = None
    if cfg.text_encoder == TRAINED:  # the text encoder trained with the UNet is in the checkpoint
        model = TextAndUNet(net, TextTransformer(cfg.text_model))
    else:
        text = TextCache.load(cfg.text_encoder, cfg.max_tokens)
    model = with_schedule(cfg, model)
    model.load_state_dict(model_weights(tensors, kw["ema"]))
    schedule = recipe_schedule(cfg, model)
    net, text = split(model.to(memory_format=torch.contiguous_format).eval(), text)
    ae = None
    if ae_record is not None:  # a latent run: the model folder carries its autoencoder
        ae, _ = load_frozen_autoencoder(ae_record["path"], ae_record["digest"])
    card = training_card(kw["run_dir"], meta)
    export_model(cfg, net, text, ae, out, data, DTYPES[kw["dtype"]], card, ae_record, schedule)
    if base is not None:
        add_base(out, Path(base))
    return out


def public_config(cfg: DiffusionRecipeConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
