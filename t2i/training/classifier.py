"""Classifier recipe: the Fashion-MNIST classifier behind fd_fashion, kid_fashion and prompt
accuracy (the network and its folder live in t2i/evaluation/classifier.py), trained with
label-smoothed cross-entropy on labelled items ({"image", "label"}: `--data fashion`), random
horizontal flips and shifts.

    t2i train classifier --data fashion --preset fashion_classifier --out runs/clf

The export writes a classifier folder (config.json with the card, fp16 model.safetensors); the
card holds top-1 on the data's test split and the real-vs-real floor of fd_fashion / kid_fashion,
measured on the weights as saved.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from t2i.data import load_dataset
from t2i.evaluation.classifier import (
    ClassifierConfig,
    FashionClassifier,
    card_scores,
    load_classifier,
    save_classifier,
)
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import first_items, open_dataset
from t2i.training.export import training_card
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick


@dataclass
class ClassifierRecipeConfig:
    model: ClassifierConfig = field(default_factory=lambda: ClassifierConfig.preset("fashion"))
    label_smoothing: float = 0.1  # cross-entropy against (1 - e) one-hot + e uniform
    flip: bool = True  # random horizontal flips (the garment classes are left-right symmetric)
    shift: int = 2  # each micro-batch moved by up to this many pixels (border -1); 0 disables
    eval_images: int | None = None  # test (and train) images scored into the card; None: all
    loop: LoopConfig = field(default_factory=LoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def _fashion_classifier() -> ClassifierRecipeConfig:
    """The shipped t2i/evaluation/extractors/fashion_classifier: 12 epochs of the 60k train
    images at batch 128 (468 steps an epoch), AdamW with 10% linear warmup then cosine to 0,
    no EMA, no clipping."""
    return ClassifierRecipeConfig(
        loop=LoopConfig(steps=12 * 468, batch_size=128, log_every=50, sample_every=0),
        optim=OptimConfig(
            lr=3e-3,
            weight_decay=5e-4,
            warmup_steps=561,  # steps // 10
            min_lr_ratio=0.0,
            grad_clip=0.0,
            ema_decay=0.0,
        ),
    )


def _tiny() -> ClassifierRecipeConfig:
    """For tests: 8/16-channel stages, 60 steps of 32 images, the card on 500 images."""
    cfg = _fashion_classifier()
    cfg.model, cfg.eval_images = ClassifierConfig.preset("tiny"), 500
    cfg.loop = LoopConfig(steps=60, batch_size=32, log_every=10, ckpt_every=0, sample_every=0)
    cfg.optim.warmup_steps = 6
    return cfg


CONFIG_PRESETS = {
    "default": _fashion_classifier,
    "fashion_classifier": _fashion_classifier,
    "tiny": _tiny,
}


def preset(name: str) -> ClassifierRecipeConfig:
    return pick("classifier", CONFIG_PRESETS, name)


def build(cfg: ClassifierRecipeConfig, args: argparse.Namespace) -> Recipe:
    cfg.model.__post_init__()
    if cfg.eval_images is not None and cfg.eval_images < 1:
        raise ValueError(f"eval_images {cfg.eval_images} must be >= 1 (or none: all)")
    dataset, channels = open_dataset(args.data, cfg.model.image_size)
    if "label" not in first_items(dataset, 1)[0]:
        raise ValueError(
            f"the classifier trains on labelled items (--data fashion), not {args.data!r}"
        )
    if channels != cfg.model.in_channels:
        raise ValueError(f"model.in_channels {cfg.model.in_channels} != data {channels}")
    seed_everything(cfg.loop.seed)
    command = ["t2i train classifier", "--data", str(args.data), "--preset", args.preset]
    card = {
        "preset": args.preset,
        "command": " ".join(command + list(getattr(args, "overrides", []))),
    }
    return classifier_recipe(cfg, FashionClassifier(cfg.model), dataset, str(args.data), card)


def augment(x: torch.Tensor, cfg: ClassifierRecipeConfig, rng: StepRNG) -> torch.Tensor:
    """Random flips (per image) and one integer shift per micro-batch; -1 fills the border."""
    if cfg.flip:
        flip = rng.rand() < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if cfg.shift:
        s = cfg.shift
        dy, dx = torch.randint(0, 2 * s + 1, (2,), generator=rng.generator).tolist()
        x = F.pad(x, (s, s, s, s), value=-1.0)[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    return x


def classifier_recipe(
    cfg: ClassifierRecipeConfig, model: FashionClassifier, dataset, data: str, card: dict
) -> Recipe:
    def collate(items: list[dict]) -> dict:
        return {
            "image": torch.stack([it["image"] for it in items]),
            "label": torch.tensor([it["label"] for it in items]),
        }

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        logits = model(augment(batch["image"], cfg, rng))
        return F.cross_entropy(logits, batch["label"], label_smoothing=cfg.label_smoothing)

    def export(trained: FashionClassifier, folder: Path) -> None:
        save_classifier(trained, folder, card)
        clf = load_classifier(folder)  # the fp16 weights as saved are what the card measures
        test = load_dataset(data, image_size=cfg.model.image_size, split="test")
        x_test, y_test = _stack(test, cfg.eval_images)
        x_train, _ = _stack(dataset, cfg.eval_images)
        scores = card_scores(clf, x_train, x_test, y_test)
        run = {"step": cfg.loop.steps, "samples_seen": cfg.loop.steps * cfg.loop.batch_size}
        full = {**card, **scores, "data": f"{data}: train {len(dataset)}, test {len(test)}"}
        full |= {"training": training_card(folder.parent, run), "train_config": asdict(cfg)}
        save_classifier(clf, folder, full)
        print(f"classifier: {scores}; card in {folder / 'config.json'}")

    public = {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
    return Recipe("classifier", model, dataset, collate, loss, None, export, public)


def _stack(dataset, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, C, S, S), labels (n,)) of the first n items (all when n is None)."""
    items = first_items(dataset, len(dataset) if n is None else n)
    return torch.stack([it["image"] for it in items]), torch.tensor([it["label"] for it in items])
