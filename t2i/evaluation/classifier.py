"""A Fashion-MNIST classifier trained here: the feature extractor behind `fd_fashion`/`kid_fashion`
and prompt accuracy (no Inception weights can be downloaded, so this stands in for them).

Input is the generator's format, (B, 1, 32, 32) in [-1, 1] (28x28 padded by 2 with black, as the
data layer's `fashion` source). Three conv stages (conv-BN-ReLU, max-pool) then a 128-d
penultimate layer: `features()` returns it for Frechet distance and KID.

    clf = load_fashion_classifier()                     # the folder shipped in the package
    feats = clf.features(images)                        # (B, 128)
    preds = clf(images).argmax(-1)                      # (B,) class indices
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from t2i.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    atomic_write_bytes,
    atomic_write_json,
    config_from_dict,
    load_weights,
    read_safetensors,
)

BUNDLED_DIR = Path(__file__).parent / "extractors" / "fashion_classifier"
COMPONENT_TYPE = "fashion_classifier"


@dataclass
class ClassifierConfig:
    image_size: int = 32
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128)  # one stage each: convs then a 2x max-pool
    convs: int = 1  # conv-BN-ReLU layers per stage
    feature_dim: int = 128  # penultimate width: the features of FD / KID
    num_classes: int = 10
    dropout: float = 0.3  # before the last linear layer; 0 disables

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.image_size % 2 ** len(self.channels):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**{len(self.channels)}"
            )

    @classmethod
    def preset(cls, name: str, **overrides) -> ClassifierConfig:
        if name not in CLASSIFIER_PRESETS:
            raise ValueError(
                f"unknown classifier preset {name!r}; choose from {sorted(CLASSIFIER_PRESETS)}"
            )
        return replace(CLASSIFIER_PRESETS[name], **overrides)


CLASSIFIER_PRESETS: dict[str, ClassifierConfig] = {
    "tiny": ClassifierConfig(channels=(8, 16), feature_dim=16),
    "fashion": ClassifierConfig(),
}


@dataclass
class ClassifierTrainConfig:
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3  # peak of a one-cycle schedule (linear warmup 10%, cosine down)
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    flip: bool = True  # random horizontal flips (garments are left-right symmetric classes)
    shift: int = 2  # random translation by up to this many pixels; 0 disables
    bf16: bool = False  # bf16 autocast (CPU); see BENCHMARKS.md for whether it pays
    seed: int = 0
    threads: int = 0  # torch threads while training (1 is fastest on a busy machine); 0: as is


def _stage(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(convs):
        layers += [nn.Conv2d(c_out if k else c_in, c_out, 3, padding=1, bias=False)]
        layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class FashionClassifier(nn.Module):
    """conv stages -> flatten -> linear(feature_dim) + ReLU (features) -> dropout -> linear."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = c = config
        chans = (c.in_channels, *c.channels)
        self.stages = nn.Sequential(*(_stage(a, b, c.convs) for a, b in zip(chans[:-1], chans[1:])))
        side = c.image_size // 2 ** len(c.channels)
        self.fc = nn.Linear(c.channels[-1] * side * side, c.feature_dim)
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.feature_dim, c.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, S) in [-1, 1] -> (B, feature_dim) penultimate activations."""
        c = self.config
        if x.ndim != 4 or x.shape[1:] != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(
                f"classifier input must be (B, {c.in_channels}, {c.image_size}, {c.image_size}) "
                f"in [-1, 1], got {tuple(x.shape)}"
            )
        return F.relu(self.fc(self.stages(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, S) -> (B, num_classes) logits."""
        return self.head(self.features(x))


# ---------------------------------------------------------------- folder


def save_classifier(model: FashionClassifier, directory: str | Path, card: dict) -> None:
    """config.json ({"type", "config", "card"}) + model.safetensors in fp16 (atomic writes)."""
    from safetensors.torch import save as st_save

    directory = Path(directory)
    tensors = {
        k: (v.half() if v.is_floating_point() else v).detach().contiguous().clone()
        for k, v in model.state_dict().items()
    }
    atomic_write_bytes(directory / WEIGHTS_NAME, st_save(tensors, {"dtype": "float16"}))
    meta = {"type": COMPONENT_TYPE, "config": dataclasses.asdict(model.config), "card": card}
    atomic_write_json(directory / CONFIG_NAME, meta)


def load_classifier(directory: str | Path = BUNDLED_DIR) -> FashionClassifier:
    """Build from config.json and load the (checked) safetensors weights in fp32, eval mode."""
    meta = read_card(directory, full=True)
    if meta.get("type") != COMPONENT_TYPE:
        raise ValueError(f"{directory}: type {meta.get('type')!r}, expected {COMPONENT_TYPE!r}")
    config = config_from_dict(ClassifierConfig, meta["config"], str(Path(directory) / CONFIG_NAME))
    model = FashionClassifier(config)
    weights = Path(directory) / WEIGHTS_NAME
    load_weights(model, read_safetensors(weights), str(weights))
    return model.eval()


def read_card(directory: str | Path = BUNDLED_DIR, full: bool = False) -> dict:
    """The training card of a classifier folder (accuracy, data, recipe); full=True: all JSON."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a classifier folder")
    meta = json.loads(path.read_text())
    return meta if full else meta["card"]


# ---------------------------------------------------------------- data + training


def fashion_tensors(split: str, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole Fashion-MNIST split as (N, 1, 32, 32) float in [-1, 1] and (N,) int64 labels,
    padded exactly as the data layer's items (t2i.data.fashion.FashionMNIST, image_size=32)."""
    from t2i.data.fashion import FashionMNIST

    ds = FashionMNIST(split, image_size=32, root=root)
    a = np.pad(ds.images, ((0, 0), (2, 2), (2, 2))).astype(np.float32)
    images = torch.from_numpy(a / 127.5 - 1.0)[:, None]
    return images, torch.from_numpy(ds.labels.astype(np.int64))


def _augment(x: torch.Tensor, cfg: ClassifierTrainConfig, g: torch.Generator) -> torch.Tensor:
    """Random flips and integer shifts (background -1 fills the border)."""
    if cfg.flip:
        flip = torch.rand(len(x), generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if cfg.shift:
        s = cfg.shift
        padded = F.pad(x, (s, s, s, s), value=-1.0)
        dy, dx = torch.randint(0, 2 * s + 1, (2,), generator=g).tolist()
        x = padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    return x


def _lr_at(step: int, total: int, peak: float) -> float:
    warm = max(1, total // 10)
    if step < warm:
        return peak * (step + 1) / warm
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch=1000) -> float:
    """Top-1 accuracy of model on (images, labels)."""
    model.eval()
    correct = sum(
        (model(images[i : i + batch]).argmax(-1) == labels[i : i + batch]).sum().item()
        for i in range(0, len(images), batch)
    )
    return correct / len(images)


def train_classifier(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: ClassifierConfig,
    cfg: ClassifierTrainConfig,
    log=print,
) -> tuple[FashionClassifier, dict]:
    """AdamW + one-cycle LR on `train`, top-1 on `test` after each epoch -> (model, card)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)
    try:
        return _train(train, test, config, cfg, log)
    finally:
        torch.set_num_threads(threads)


def _train(train, test, config, cfg, log) -> tuple[FashionClassifier, dict]:
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = FashionClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x_train, y_train = train
    steps_per_epoch = len(x_train) // cfg.batch_size
    total, step, t0, history = cfg.epochs * steps_per_epoch, 0, time.time(), []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=g)
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = _augment(x_train[idx], cfg, g)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, cfg.lr)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = F.cross_entropy(model(x), y_train[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        acc = evaluate(model, *test)
        history.append(round(acc, 4))
        if log is not None:
            log(
                f"epoch {epoch + 1}/{cfg.epochs} loss {loss.item():.4f} test_acc {acc:.4f} "
                f"elapsed {time.time() - t0:.0f}s"
            )
    card = {
        "test_accuracy": history[-1],
        "test_accuracy_per_epoch": history,
        "train_seconds": round(time.time() - t0),
        "train_config": dataclasses.asdict(cfg),
    }
    return model.eval(), card
