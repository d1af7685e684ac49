"""CLIP recipe: an image encoder and a small text tower trained with the symmetric InfoNCE loss
(Radford et al. 2021). The word vocabulary is built from the data's own captions.

Under several processes each rank contrasts its own local batch (no all-gather of negatives).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from t2i.checkpoint import save_model_folder
from t2i.models.clip import CLIP, CLIPConfig
from t2i.models.text_encoder import TextTransformerConfig, build_vocab
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import first_captions, open_dataset
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick


def _small_clip() -> CLIPConfig:
    return CLIPConfig.preset("small", text=TextTransformerConfig.preset("small"))


@dataclass
class ClipRecipeConfig:
    model: CLIPConfig = field(default_factory=_small_clip)
    vocab_captions: int = 2000  # captions of the data that build the word vocabulary
    data_length: int = 100_000  # items drawn from procedural sources (shapes)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=5000, batch_size=64))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=0.1))


def _tiny() -> ClipRecipeConfig:
    """For tests: 16x16 images, a 2-layer text tower, a few steps."""
    text = TextTransformerConfig.preset("tiny")
    return ClipRecipeConfig(
        model=CLIPConfig.preset("tiny", text=text),
        vocab_captions=32,
        data_length=64,
        loop=LoopConfig(steps=8, batch_size=8, log_every=1, ckpt_every=4, sample_every=0),
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
    )


def _fashion() -> ClipRecipeConfig:
    cfg = ClipRecipeConfig()
    cfg.model.image_size, cfg.model.image_channels = 32, 1
    return cfg


CONFIG_PRESETS = {"default": ClipRecipeConfig, "fashion": _fashion, "tiny": _tiny}


def preset(name: str) -> ClipRecipeConfig:
    return pick("clip", CONFIG_PRESETS, name)


def build(cfg: ClipRecipeConfig, args: argparse.Namespace) -> Recipe:
    cfg.model.__post_init__()
    if cfg.model.text is None:
        raise ValueError("the clip recipe trains its own text tower: model.text must be set")
    dataset, channels = open_dataset(args.data, cfg.model.image_size, cfg.data_length)
    if cfg.model.image_channels != channels:
        raise ValueError(f"model.image_channels {cfg.model.image_channels} != data {channels}")
    if not cfg.model.text.vocab:
        cfg.model.text.vocab = build_vocab(first_captions(dataset, cfg.vocab_captions))
    seed_everything(cfg.loop.seed)
    return clip_recipe(cfg, CLIP(cfg.model), dataset, str(args.data))


def clip_recipe(cfg: ClipRecipeConfig, clip: CLIP, dataset, data_name: str) -> Recipe:
    def collate(items: list[dict]) -> dict:
        return {
            "image": torch.stack([it["image"] for it in items]),
            "caption": [it["caption"] for it in items],
        }

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        return clip.loss(batch["image"], clip.encode_prompts(batch["caption"]))

    def export(ema: CLIP, folder: Path) -> None:
        save_model_folder(folder, {"clip": ema}, {"data": {"source": data_name}})

    public = {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
    return Recipe("clip", clip, dataset, collate, loss, None, export, public)
