"""A Fashion-MNIST classifier trained here: the feature extractor behind `fd_fashion`/`kid_fashion`
and prompt accuracy (no Inception weights can be downloaded, so this stands in for them).

Input is the generator's format, (B, 1, 32, 32) in [-1, 1] (28x28 padded by 2 with black, as the
data layer's `fashion` source). Three conv stages (conv-BN-ReLU, max-pool) then a 128-d
penultimate layer: `features()` returns it for Frechet distance and KID.

    clf = load_fashion_classifier()                     # the folder shipped in the package
    feats = clf.features(images)                        # (B, 128)
    preds = clf(images).argmax(-1)                      # (B,) class indices

Trained by the classifier recipe (t2i/training/classifier.py): the shipped folder is its
`fashion_classifier` preset, `t2i train classifier --data fashion --preset fashion_classifier`.
"""

from __future__ import annotations

import dataclasses
import json
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
from t2i.evaluation.features import extract_features
from t2i.evaluation.metrics import frechet_distance, kid

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


def save_classifier(
    model: FashionClassifier, directory: str | Path, card: dict, kind: str = COMPONENT_TYPE
) -> None:
    """config.json ({"type", "config", "card"}) + model.safetensors in fp16 (atomic writes);
    `kind` names what it classifies (another judge reuses the network)."""
    from safetensors.torch import save as st_save

    directory = Path(directory)
    tensors = {
        k: (v.half() if v.is_floating_point() else v).detach().contiguous().clone()
        for k, v in model.state_dict().items()
    }
    atomic_write_bytes(directory / WEIGHTS_NAME, st_save(tensors, {"dtype": "float16"}))
    meta = {"type": kind, "config": dataclasses.asdict(model.config), "card": card}
    atomic_write_json(directory / CONFIG_NAME, meta)


def load_classifier(
    directory: str | Path = BUNDLED_DIR, kind: str = COMPONENT_TYPE
) -> FashionClassifier:
    """Build from config.json and load the (checked) safetensors weights in fp32, eval mode."""
    meta = read_card(directory, full=True)
    if meta.get("type") != kind:
        raise ValueError(f"{directory}: type {meta.get('type')!r}, expected {kind!r}")
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


# ---------------------------------------------------------------- data + scores


def fashion_tensors(split: str, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole Fashion-MNIST split as (N, 1, 32, 32) float in [-1, 1] and (N,) int64 labels,
    padded exactly as the data layer's items (t2i.data.fashion.FashionMNIST, image_size=32)."""
    from t2i.data.fashion import FashionMNIST

    ds = FashionMNIST(split, image_size=32, root=root)
    a = np.pad(ds.images, ((0, 0), (2, 2), (2, 2))).astype(np.float32)
    images = torch.from_numpy(a / 127.5 - 1.0)[:, None]
    return images, torch.from_numpy(ds.labels.astype(np.int64))


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch=1000) -> float:
    """Top-1 accuracy of model on (images, labels)."""
    model.eval()
    correct = sum(
        (model(images[i : i + batch]).argmax(-1) == labels[i : i + batch]).sum().item()
        for i in range(0, len(images), batch)
    )
    return correct / len(images)


def card_scores(
    clf: FashionClassifier,
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
) -> dict:
    """What a classifier's card states: top-1 on the test images and the real-vs-real floor of
    fd_fashion / kid_fashion (features of the train images vs those of the test images)."""
    f_train, f_test = extract_features(clf, train_images), extract_features(clf, test_images)
    size = min(1000, len(f_train), len(f_test))
    k_mean, k_std = kid(f_train, f_test, subsets=100, subset_size=size, seed=0)
    return {
        "test_accuracy": round(evaluate(clf, test_images, test_labels), 4),
        "fd_fashion_train_vs_test": round(frechet_distance(f_train, f_test), 4),
        "kid_fashion_train_vs_test": [round(k_mean, 6), round(k_std, 6)],
    }
