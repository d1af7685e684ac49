"""`fashion`: Fashion-MNIST (Xiao et al. 2017) from the Debian package, with captions.

`apt-get install dataset-fashion-mnist` puts the IDX files in /usr/share/datasets/fashion-mnist/;
`T2I_FASHION_DIR` or `root=` points elsewhere. Images are 28x28 grey, padded to 32x32 by default.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = (
    "t-shirt",
    "pair of trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
TEMPLATES = ("a photo of {}", "{}", "a picture of {}", "a black and white photo of {}")
SPLITS = {"train": "train", "test": "t10k"}


def _with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def fashion_captions(label: int) -> list[str]:
    """Every caption of a class: 'a photo of a sneaker', 'an ankle boot', ..."""
    return [t.format(_with_article(CLASSES[label])) for t in TEMPLATES]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) -> uint8 array; the header gives the shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\0\0" or data[2] != 8:
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {arr.size} values for shape {shape}")
    return arr.reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}; install the Debian package "
        "dataset-fashion-mnist (scripts/setup.sh --dev) or set T2I_FASHION_DIR"
    )


class FashionMNIST(Dataset):
    """Items {"image": (1, S, S) in [-1, 1], "caption": str, "label": int}, S = 28 or 32 (padded).

    The caption template of item i is fixed by (seed, i); `image_size` other than 28/32 resizes.
    """

    def __init__(self, split="train", image_size=32, root: str | None = None, seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"unknown fashion split {split!r}; choose from {list(SPLITS)}")
        root_path = Path(root or os.environ.get("T2I_FASHION_DIR", DEFAULT_ROOT))
        prefix = SPLITS[split]
        self.images = read_idx(_find(root_path, f"{prefix}-images-idx3-ubyte"))  # (N, 28, 28)
        self.labels = read_idx(_find(root_path, f"{prefix}-labels-idx1-ubyte"))  # (N,)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{root_path}: {len(self.images)} images, {len(self.labels)} labels")
        self.image_size, self.seed = image_size, seed

    def __len__(self) -> int:
        return len(self.labels)

    def _pixels(self, a: np.ndarray) -> np.ndarray:
        if self.image_size == 28:
            return a
        if self.image_size == 32:  # pad with the background (black) as in the LeNet setting
            return np.pad(a, 2)
        return np.asarray(Image.fromarray(a).resize((self.image_size,) * 2, Image.BICUBIC))

    def __getitem__(self, index: int) -> dict:
        label = int(self.labels[index])
        a = self._pixels(self.images[index]).astype(np.float32)
        captions = fashion_captions(label)
        pick = np.random.default_rng([self.seed, index]).integers(len(captions))
        image = torch.from_numpy(a / 127.5 - 1.0)[None]
        return {"image": image, "caption": captions[pick], "label": label}
