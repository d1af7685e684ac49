"""Data sources: every one gives items {"image": (C, H, W) in [-1, 1], "caption": str, ...}.

`load_dataset(spec)` maps a `--data` argument to a dataset:
    shapes, shapes:single      procedural scenes (t2i.data.shapes), judged exactly by t2i.data.judge
    shapes:varied              the same, captions as people type them (t2i.data.shapes_phrasing)
    fashion                    Fashion-MNIST from the Debian package (t2i.data.fashion)
    fashion:varied             the same, captions as people type them (plurals, synonyms, frames)
    path/to/folder             images + captions (name.png + name.txt, or metadata.jsonl)
    shards/train-{000000..000009}.tar, shards/*.tar   WebDataset-style tar shards
Use `collate` as the DataLoader's collate_fn: it stacks tensors and keeps other fields as lists.
"""

from __future__ import annotations

import glob
from pathlib import Path

import torch
from torch.utils.data import Dataset, IterableDataset

from t2i.data.transforms import TransformConfig

BUILTIN = ("shapes", "fashion")


def load_dataset(
    spec: str,
    *,
    image_size: int | None = None,
    split: str = "train",
    seed: int = 0,
    length: int = 100_000,
    transform: TransformConfig | None = None,
    strict: bool = False,
    shuffle: bool = False,
) -> Dataset | IterableDataset:
    """The dataset a `--data` argument names (see the module docstring for the forms).

    Args:
        image_size: output side (shapes 64, fashion 32 and folders/shards 64 when None).
        split: "train"/"test" (shapes also "holdout", "all"); a folder keeps the metadata.jsonl rows
            of that "split" (rows without the field are in every split); shards have no split.
        length: number of `shapes` items (item i is fixed by (seed, i), so any length is cheap).
        transform: resize/crop/mode settings for folders and shards (default: centre crop).
        strict: unreadable images raise instead of being skipped with a warning.
        shuffle: shard order and an item buffer (shards only; map-style sets use a sampler).
    """
    name, _, option = spec.partition(":")
    if name == "shapes":
        from t2i.data.shapes import ShapesConfig, ShapesDataset
        from t2i.data.shapes_phrasing import VariedShapesDataset

        varied = option == "varied"  # the default world, captions as people type them
        cfg = ShapesConfig.preset("default" if varied else option or "default")
        cfg.image_size, cfg.seed = image_size or cfg.image_size, seed
        return (VariedShapesDataset if varied else ShapesDataset)(cfg, length=length, split=split)
    if name == "fashion":
        from t2i.data.fashion import FashionMNIST

        captions = option or "canonical"
        return FashionMNIST(split=split, image_size=image_size or 32, seed=seed, captions=captions)
    transform = transform or TransformConfig(size=image_size or 64)
    if Path(spec).is_dir():
        from t2i.data.folder import ImageFolder

        return ImageFolder(spec, transform=transform, strict=strict, seed=seed, split=split)
    if spec.endswith(".tar") or "{" in spec:
        from t2i.data.shards import ShardDataset

        return ShardDataset(spec, transform=transform, shuffle=shuffle, seed=seed, strict=strict)
    hint = " (no such folder)" if not glob.has_magic(spec) else ""
    raise ValueError(
        f"unknown data {spec!r}{hint}; choose from {list(BUILTIN)}, 'shapes:<preset>', a folder of "
        "images + captions, or tar shards ('dir/train-{000000..000009}.tar' or 'dir/*.tar')"
    )


def collate(batch: list[dict]) -> dict:
    """List of items -> dict: tensors stacked on a new batch dim, everything else as lists."""
    out = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


__all__ = ["BUILTIN", "TransformConfig", "collate", "load_dataset"]
