"""`fashion`: Fashion-MNIST (Xiao et al. 2017) from the Debian package, with captions.

`apt-get install dataset-fashion-mnist` puts the IDX files in /usr/share/datasets/fashion-mnist/;
`T2I_FASHION_DIR` or `root=` points elsewhere. Images are 28x28 grey, padded to 32x32 by default.

Captions: "canonical" (the shipped model's: 'a photo of a sandal', 4 templates over CLASSES) or
"varied" (`--data fashion:varied`): also the names people type (NAMES: plurals, synonyms, 'a pair
of sandals'), sentence frames, case and punctuation, in the TRAIN_FRAMES only; HELDOUT_FRAMES and
UNSEEN_NAMES are in no training caption, and `fashion_eval_prompts` tests with them.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from t2i.data.typed import typed_case

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
CAPTION_STYLES = ("canonical", "varied")  # FashionMNIST(captions=...); `--data fashion:varied`
CANONICAL_SHARE = 0.3  # "varied": the share of items that keep their canonical caption


def _with_article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def fashion_captions(label: int) -> list[str]:
    """Every caption of a class: 'a photo of a sneaker', 'an ankle boot', ..."""
    return [t.format(_with_article(CLASSES[label])) for t in TEMPLATES]


# ---------------------------------------------------------------- captions as people type them
# Each class by the names people type: singular noun phrases (an article is added) and plurals
# (bare). The first singular name is the class's own (CLASSES). One item per image, so no counts.
NAMES: dict[int, dict[str, tuple[str, ...]]] = {
    0: {
        "singular": ("t-shirt", "tee", "t shirt", "tshirt", "tee shirt", "short-sleeved top"),
        "plural": ("t-shirts", "tees", "tshirts", "tee shirts", "short-sleeved tops"),
    },
    1: {
        "singular": ("pair of trousers", "pair of pants", "pair of jeans", "pair of slacks"),
        "plural": ("trousers", "pants", "jeans", "slacks", "pairs of trousers", "pairs of pants"),
    },
    2: {
        "singular": ("pullover", "sweater", "jumper", "sweatshirt", "knit sweater"),
        "plural": ("pullovers", "sweaters", "jumpers", "sweatshirts", "knit sweaters"),
    },
    3: {
        "singular": ("dress", "gown", "frock", "sundress", "summer dress"),
        "plural": ("dresses", "gowns", "frocks", "sundresses", "summer dresses"),
    },
    4: {
        "singular": ("coat", "jacket", "overcoat", "winter coat", "parka"),
        "plural": ("coats", "jackets", "overcoats", "winter coats", "parkas"),
    },
    5: {
        "singular": ("sandal", "pair of sandals", "strappy sandal", "summer sandal", "flat sandal"),
        "plural": ("sandals", "strappy sandals", "summer sandals", "pairs of sandals"),
    },
    6: {
        "singular": (
            "shirt",
            "button-up shirt",
            "button-down shirt",
            "collared shirt",
            "dress shirt",
        ),
        "plural": ("shirts", "button-up shirts", "button-down shirts", "collared shirts"),
    },
    7: {
        "singular": ("sneaker", "trainer", "running shoe", "pair of sneakers", "pair of trainers"),
        "plural": ("sneakers", "trainers", "running shoes", "pairs of sneakers"),
    },
    8: {
        "singular": ("bag", "handbag", "purse", "shoulder bag", "tote bag"),
        "plural": ("bags", "handbags", "purses", "shoulder bags", "tote bags"),
    },
    9: {
        "singular": ("ankle boot", "boot", "pair of boots", "pair of ankle boots", "short boot"),
        "plural": ("ankle boots", "boots", "short boots", "pairs of ankle boots"),
    },
}
# Names no training caption uses: whether the text side generalises to words it was not trained on
# (a diagnostic beside the held-out set, not part of it).
UNSEEN_NAMES: dict[int, tuple[str, ...]] = {
    0: ("crew-neck tee", "crew-neck tees"),
    1: ("pair of chinos", "chinos"),
    2: ("cardigan", "cardigans"),
    3: ("evening dress", "evening dresses"),
    4: ("raincoat", "raincoats"),
    5: ("open-toe sandal", "open-toe sandals"),
    6: ("oxford shirt", "oxford shirts"),
    7: ("tennis shoe", "tennis shoes"),
    8: ("clutch", "clutches"),
    9: ("bootie", "booties"),
}
# Sentence frames, "{}" is the noun phrase. A held-out frame is in no training caption.
TRAIN_FRAMES = (
    "{}",
    "a photo of {}",
    "a picture of {}",
    "a black and white photo of {}",
    "an image of {}",
    "draw {}",
    "{} on a plain background",
    "a product photo of {}",
    "a grayscale picture of {}",
    "a drawing of {}",
    "photo of {}",
    "here is {}",
    "{} on a black background",
    "a small picture of {}",
)
HELDOUT_FRAMES = (
    "an image showing {}",
    "show me {}",
    "generate {}",
    "a picture showing {}",
    "a close-up photo of {}",
    "a catalogue photo of {}",
    "make an image of {}",
    "{}, product shot",
    "a simple photo of {}",
    "please draw {}",
    "a monochrome image of {}",
    "{} isolated on black",
)
CAPTION_SPLITS = {"train": TRAIN_FRAMES, "heldout": HELDOUT_FRAMES}


def _noun_phrase(name: str, plural: bool, rng: np.random.Generator) -> str:
    """A name with what people put before it: 'a sandal', 'the sandal', 'sandal', 'sandals'."""
    if plural:
        return ("the " + name) if rng.random() < 0.15 else name
    u = rng.random()
    return _with_article(name) if u < 0.7 else ("the " + name) if u < 0.85 else name


def _styled(text: str, rng: np.random.Generator) -> str:
    """Case and end punctuation as typed: mostly as is, sometimes capitalised, shouted, or
    ending in '.' / '!'."""
    text = typed_case(text, rng.random())
    v = rng.random()
    return text + ("." if v < 0.2 else "!" if v < 0.25 else "")


def varied_caption(
    label: int, rng: np.random.Generator, split: str = "train", plural: bool | None = None
) -> str:
    """One caption of a class in a phrasing of `split` ("train" or "heldout" frames): any of the
    class's NAMES, singular or plural (plural=None: either, 0.4 plural), any frame, case and
    punctuation. 'Show me sandals.', 'draw a pair of trainers', 'A photo of a jumper'."""
    if split not in CAPTION_SPLITS:
        raise ValueError(f"unknown caption split {split!r}; choose from {list(CAPTION_SPLITS)}")
    if plural is None:
        plural = bool(rng.random() < 0.4)
    names = NAMES[label]["plural" if plural else "singular"]
    name = names[rng.integers(len(names))]
    frames = CAPTION_SPLITS[split]
    frame = frames[rng.integers(len(frames))]
    return _styled(frame.format(_noun_phrase(name, plural, rng)), rng)


def class_names(label: int) -> tuple[str, ...]:
    """Every name of a class, singular and plural, unseen ones included (lower case)."""
    return NAMES[label]["singular"] + NAMES[label]["plural"] + UNSEEN_NAMES[label]


def fashion_eval_prompts(per_kind: int = 20, seed: int = 0) -> list[tuple[str, int, str]]:
    """The fixed held-out prompt set: (prompt, label, kind) with per_kind prompts of each kind
    and class, every one in a held-out frame. kind "plural": a plural name ('show me sandals');
    "synonym": a singular name other than the class's own ('an image showing a pair of
    sandals', 'generate a jumper'). Names are dealt round-robin, each with its own order of the
    frames, so every name is used and no (name, frame) pair repeats before all are used."""
    out = []
    for label in range(len(CLASSES)):
        for kind in ("plural", "synonym"):
            names = NAMES[label]["plural" if kind == "plural" else "singular"]
            names = names if kind == "plural" else names[1:]
            rng = np.random.default_rng([seed, label, kind == "plural"])
            orders = [rng.permutation(len(HELDOUT_FRAMES)) for _ in names]  # a frame order each
            for k in range(per_kind):
                n = k % len(names)
                name, frame = names[n], HELDOUT_FRAMES[orders[n][k // len(names) % len(orders[n])]]
                phrase = name if kind == "plural" else _with_article(name)
                out.append((_styled(frame.format(phrase), rng), label, kind))
    return out


def fashion_unseen_prompts(per_class: int = 10, seed: int = 0) -> list[tuple[str, int]]:
    """(prompt, label): UNSEEN_NAMES in held-out frames, per_class of each class."""
    out = []
    for label, names in UNSEEN_NAMES.items():
        rng = np.random.default_rng([seed, label, 2])
        for k in range(per_class):
            name = names[k % len(names)]
            phrase = name if k % 2 else _with_article(name)
            frame = HELDOUT_FRAMES[rng.integers(len(HELDOUT_FRAMES))]
            out.append((_styled(frame.format(phrase), rng), label))
    return out


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

    def __init__(
        self,
        split="train",
        image_size=32,
        root: str | None = None,
        seed: int = 0,
        captions: str = "canonical",
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown fashion split {split!r}; choose from {list(SPLITS)}")
        root_path = Path(root or os.environ.get("T2I_FASHION_DIR", DEFAULT_ROOT))
        prefix = SPLITS[split]
        self.images = read_idx(_find(root_path, f"{prefix}-images-idx3-ubyte"))  # (N, 28, 28)
        self.labels = read_idx(_find(root_path, f"{prefix}-labels-idx1-ubyte"))  # (N,)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{root_path}: {len(self.images)} images, {len(self.labels)} labels")
        if captions not in CAPTION_STYLES:
            raise ValueError(f"unknown fashion captions {captions!r}; choose from {CAPTION_STYLES}")
        self.image_size, self.seed, self.captions = image_size, seed, captions

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
        image = torch.from_numpy(a / 127.5 - 1.0)[None]
        return {"image": image, "caption": self.caption(index, label), "label": label}

    def caption(self, index: int, label: int) -> str:
        """Item index's caption, fixed by (seed, index): "canonical" one of fashion_captions;
        "varied" that one with probability CANONICAL_SHARE, else a varied_caption in a
        training phrasing."""
        captions = fashion_captions(label)
        pick = np.random.default_rng([self.seed, index]).integers(len(captions))
        if self.captions == "canonical":
            return captions[pick]
        rng = np.random.default_rng([self.seed, index, 1])
        if rng.random() < CANONICAL_SHARE:
            return captions[pick]
        return varied_caption(label, rng, "train")
