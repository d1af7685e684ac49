"""`t2i train lora --init MODEL --data FOLDER`: a LoRA (t2i/adapters/lora.py) on a trained diffusion
model, everything else frozen; the diffusion recipe's loss, sampling grids and data, the loop's
checkpoints and exact resume. The run's `model/` folder receives `<name>.safetensors`, the one
file `t2i generate --lora` and `<lora:name:scale>` load.

The run adopts the base model's settings (`--init`, t2i/training/diffusion_init.py); the keys
of `lora.*` set the adapter (rank, alpha, targets, dropout, convs, text_encoder). Its trigger
words default to the caption words the base's text encoder cannot read: with the word-level
encoder of `shapes` they are the new concept's own words, which the LoRA learns through the one
unknown token they become (textual inversion gives them their own vectors instead).
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn
from torch.utils.data import ConcatDataset, Subset

from t2i.adapters import lora
from t2i.training import diffusion
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import (
    first_captions,
    latent_dataset,
    load_frozen_autoencoder,
    open_dataset,
)
from t2i.training.diffusion_config import DiffusionRecipeConfig
from t2i.training.diffusion_init import adopt  # noqa: F401 (train_one's --init hook)
from t2i.training.loop import Recipe
from t2i.training.presets import pick

NAME = "lora"  # the recipe's name on the command line and in its runs' config.json


@dataclass
class LoraRecipeConfig(DiffusionRecipeConfig):
    lora: lora.LoraConfig = field(default_factory=lora.LoraConfig)
    name: str = ""  # the adapter's name (its file is <name>.safetensors); "" = the --out folder's
    trigger: tuple[str, ...] = ()  # empty: the caption words the base's text encoder cannot read
    # prior preservation (DreamBooth, Ruiz et al. 2023): the first prior_images items of the
    # base's own kind of data (e.g. "shapes") trained on beside the folder, so the LoRA keeps
    # what the base draws for prompts without the concept; "" = none
    prior_data: str = ""
    prior_images: int = 0


def _default() -> LoraRecipeConfig:
    """Rank 4 on the attention projections, 1,000 steps of 16 at lr 1e-3 (a few minutes)."""
    return LoraRecipeConfig(
        loop=LoopConfig(steps=1000, batch_size=16, log_every=20, ckpt_every=250, sample_every=250),
        optim=OptimConfig(lr=1e-3, warmup_steps=50, weight_decay=0.0, ema_decay=0.0),
    )


def _tiny() -> LoraRecipeConfig:
    """For tests: rank 2, a few steps, fp32."""
    cfg = _default()
    cfg.lora = replace(cfg.lora, rank=2, alpha=2.0)
    cfg.loop = LoopConfig(steps=4, batch_size=2, log_every=1, ckpt_every=2, sample_every=0)
    cfg.sample_steps = 2
    return cfg


CONFIG_PRESETS = {"default": _default, "tiny": _tiny}


def preset(name: str) -> LoraRecipeConfig:
    return pick("lora", CONFIG_PRESETS, name)


def build(cfg: LoraRecipeConfig, args: argparse.Namespace) -> Recipe:
    """The base model's recipe, frozen, with a fresh LoRA on its UNet (and trained encoder)."""
    if not getattr(args, "init", None):
        raise ValueError("t2i train lora needs --init MODEL: the model the LoRA adapts")
    base_name = Path(args.init).name
    recipe = diffusion.build(cfg, args)
    if cfg.prior_data:
        recipe.dataset = with_prior(recipe.dataset, cfg, args)
    model = recipe.model.requires_grad_(False)
    unet, text = (model.unet, model.text) if hasattr(model, "unet") else (model, None)
    base_hash = lora.network_hash(unet)
    networks = {"unet": unet}
    if cfg.lora.text_encoder:
        if text is None:
            raise ValueError("lora.text_encoder: the base's text encoder is frozen (not trained)")
        networks["text_encoder"] = text
    name = cfg.name or Path(getattr(args, "out", None) or "lora").name
    for network in networks.values():
        lora.attach(network, name, cfg.lora)
    trigger = list(cfg.trigger) or new_words(recipe, cfg)
    meta = lora.LoraMeta(
        name=name,
        base=base_name,
        base_hash=base_hash,
        rank=cfg.lora.rank,
        alpha=cfg.lora.alpha,
        targets=list(cfg.lora.patterns()),
        networks=list(networks),
        trigger=trigger,
    )

    def export(ema: nn.Module, folder: Path) -> None:
        tensors = {}
        ema_networks = {"unet": ema.unet if hasattr(ema, "unet") else ema}
        if "text_encoder" in networks:
            ema_networks["text_encoder"] = ema.text
        for prefix, network in ema_networks.items():
            tensors.update(lora.adapter_state(network, name, prefix))
        lora.save(folder / f"{name}.safetensors", tensors, meta)

    recipe.name, recipe.export = NAME, export
    return recipe


def with_prior(dataset, cfg: LoraRecipeConfig, args: argparse.Namespace):
    """The folder's items followed by the first prior_images items of prior_data, encoded as the
    run encodes its own (latents through the same autoencoder)."""
    if cfg.prior_images < 1:
        raise ValueError(f"prior_data {cfg.prior_data!r} needs prior_images >= 1")
    size = cfg.data_size or cfg.image_size
    prior, _ = open_dataset(cfg.prior_data, size, cfg.prior_images)
    if len(prior) > cfg.prior_images:
        prior = Subset(prior, range(cfg.prior_images))
    if getattr(args, "autoencoder", None):
        ae, record = load_frozen_autoencoder(args.autoencoder)
        key = {"data": cfg.prior_data, "image_size": size, "length": cfg.prior_images}
        progress = not getattr(args, "no_progress", False)
        key["autoencoder"] = record["digest"]
        prior = latent_dataset(prior, ae.to_latent, key, cfg.cache_dir, progress)
    return ConcatDataset([dataset, prior])


def new_words(recipe: Recipe, cfg: LoraRecipeConfig, limit: int = 8) -> list[str]:
    """The caption words the base's trained text encoder cannot read, most frequent first (a
    frozen pretrained encoder reads nearly every English word: give `trigger` there)."""
    reader = getattr(recipe.model, "text", None)
    if reader is None:
        return []
    captions = first_captions(recipe.dataset, cfg.vocab_captions)
    counts = Counter(w for c in captions for w in reader.unknown_words(c))
    return [w for w, _ in counts.most_common(limit)]
