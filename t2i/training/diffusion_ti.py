"""`t2i train textual_inversion --init MODEL --token WORD --data FOLDER`: a new word's token
vectors (t2i/adapters/embeddings.py) learnt through a trained diffusion model, everything else
frozen; the diffusion recipe's loss, grids and data, the loop's checkpoints and exact resume. The
run's `model/` folder receives `<word>.safetensors`, which `--embedding FILE` loads.

The captions name the concept with the new word ("a teal circle" with --token teal); the rest of
every caption encodes exactly as before, so the word is all that learns. Either text encoder:
the word-level one trained with the model (`shapes`) or a frozen pretrained one (`emoji`'s
MiniLM, where the learnt word replaces its WordPiece spelling and captions are encoded on every
step instead of cached, since the word changes as it learns).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from t2i.adapters import embeddings
from t2i.training import diffusion
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.diffusion_config import DiffusionRecipeConfig
from t2i.training.diffusion_init import adopt  # noqa: F401 (train_one's --init hook)
from t2i.training.loop import Recipe
from t2i.training.presets import pick

NAME = "textual_inversion"


@dataclass
class InversionRecipeConfig(DiffusionRecipeConfig):
    token: str = ""  # the new word (required): captions use it for the concept
    init_word: str = "a"  # a word the model knows whose vector the new one starts from
    vectors: int = 1  # tokens the word stands for


def _default() -> InversionRecipeConfig:
    """One vector, 1,000 steps of 16 at lr 5e-3 (a few minutes on 2 cores)."""
    return InversionRecipeConfig(
        loop=LoopConfig(steps=1000, batch_size=16, log_every=20, ckpt_every=250, sample_every=250),
        optim=OptimConfig(lr=5e-3, warmup_steps=50, weight_decay=0.0, ema_decay=0.0),
    )


def _tiny() -> InversionRecipeConfig:
    """For tests: a few steps, fp32."""
    cfg = _default()
    cfg.loop = LoopConfig(steps=4, batch_size=2, log_every=1, ckpt_every=2, sample_every=0)
    cfg.sample_steps = 2
    return cfg


CONFIG_PRESETS = {"default": _default, "tiny": _tiny}


def preset(name: str) -> InversionRecipeConfig:
    return pick("textual_inversion", CONFIG_PRESETS, name)


def build(cfg: InversionRecipeConfig, args: argparse.Namespace) -> Recipe:
    if not getattr(args, "init", None):
        raise ValueError("t2i train textual_inversion needs --init MODEL: the model to teach")
    if not cfg.token:
        raise ValueError("give the new word: --token WORD (the captions name the concept so)")
    base_name = Path(args.init).name
    parts = diffusion.build_parts(cfg, args)
    if parts["text"] is not None:  # a frozen pretrained encoder: into the model, uncached
        parts["model"] = diffusion.TextAndUNet(parts["model"], parts["text"].encoder)
        parts["text"] = None
    model = parts["model"].requires_grad_(False)
    base_hash = embeddings.text_hash(model.text)
    start = embeddings.init_vectors(model.text, cfg.init_word, cfg.vectors)
    # the one trainable parameter
    embeddings.add_word(model.text, cfg.token, start, trainable=True)
    meta = embeddings.EmbeddingMeta(cfg.token, base_name, base_hash, cfg.vectors)
    recipe = diffusion.diffusion_recipe(cfg, **parts)

    def export(ema: nn.Module, folder: Path) -> None:
        vectors = embeddings.learnt_vectors(ema.text, cfg.token)
        embeddings.save(folder / f"{cfg.token}.safetensors", vectors, meta)

    recipe.name, recipe.export = NAME, export
    return recipe
