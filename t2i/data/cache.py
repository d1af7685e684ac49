"""Caches of autoencoder latents and text-encoder outputs of a fixed data set, in safetensors.

A cache file is named by a hash of its key parts: what the data is (name, split, size, transform),
and what made the values (e.g. `file_digest(weights)` and the model config). Same key: the file is
read back and the encoder is not called; any change in data or model: a new file is computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (e.g. model weights), to put a model's identity in a cache key."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_key(key_parts: Mapping) -> str:
    """Stable hash of JSON-able key parts (dataclasses allowed)."""

    def plain(x):
        return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else str(x)

    text = json.dumps(key_parts, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _path(cache_dir: str | Path, kind: str, key_parts: Mapping) -> tuple[Path, str]:
    key = cache_key(key_parts)
    return Path(cache_dir) / f"{kind}-{key}.safetensors", key


def _load(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    if not path.exists():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        if (f.metadata() or {}).get("key") != key:
            raise ValueError(f"cache file {path} was written for another key; delete it")
    return load_file(str(path))


def _save(path: Path, key: str, tensors: dict[str, torch.Tensor], key_parts: Mapping) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    meta = {"key": key, "key_parts": json.dumps(key_parts, sort_keys=True, default=str)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: an interrupted run leaves no half-written cache


def cached_latents(
    dataset: Dataset,
    encode_fn: Callable[[torch.Tensor], torch.Tensor],
    key_parts: Mapping,
    cache_dir: str | Path,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[torch.Tensor, list[str]]:
    """Latents (N, C, h, w) and captions of every item of a fixed dataset, computed once.

    encode_fn: images (B, C, H, W) in [-1, 1] -> latents (B, C', h, w), e.g. autoencoder.encode.
    key_parts: identity of data and model, e.g. {"data": "fashion:train", "model": file_digest(w)}.
    """
    if len(dataset) == 0:
        raise ValueError("cached_latents: the dataset is empty")
    path, key = _path(cache_dir, "latents", {**key_parts, "n": len(dataset)})
    cached = _load(path, key)
    if cached is not None:
        return cached["latents"], _decode_captions(cached)
    from tqdm import tqdm

    latents, captions = [], []
    starts = range(0, len(dataset), batch_size)
    desc = f"encoding {len(dataset)} images once"
    with torch.no_grad():
        for start in tqdm(starts, desc, unit="batch") if progress else starts:
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            latents.append(encode_fn(torch.stack([it["image"] for it in items])).float().cpu())
            captions += [it["caption"] for it in items]
    out = torch.cat(latents)
    _save(path, key, {"latents": out, **_encode_captions(captions)}, key_parts)
    return out, captions


def cached_text(
    captions: Sequence[str],
    encode_fn: Callable[[list[str]], object],
    key_parts: Mapping,
    cache_dir: str | Path,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Text-encoder outputs of a fixed caption list, computed once: {"context", "mask", "pooled"}.

    encode_fn: list of prompts -> TextEmbedding (context, mask, pooled) or a dict of tensors.
    """
    captions = list(captions)
    digest = hashlib.sha256("\n".join(captions).encode()).hexdigest()
    path, key = _path(cache_dir, "text", {**key_parts, "captions": digest})
    cached = _load(path, key)
    if cached is not None:
        if "mask" in cached:  # an encoder that gives pooled vectors alone caches no mask
            cached["mask"] = cached["mask"].bool()
        return cached
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(captions), batch_size):
            for name, t in _as_dict(encode_fn(captions[start : start + batch_size])).items():
                parts.setdefault(name, []).append(t.cpu())
    out = {name: torch.cat(ts) for name, ts in parts.items()}
    stored = {k: v.to(torch.uint8) if k == "mask" else v for k, v in out.items()}
    _save(path, key, stored, key_parts)
    return out


def _as_dict(emb) -> dict[str, torch.Tensor]:
    if isinstance(emb, Mapping):
        return {k: v for k, v in emb.items() if v is not None}
    if dataclasses.is_dataclass(emb):
        return {
            f.name: getattr(emb, f.name)
            for f in dataclasses.fields(emb)
            if getattr(emb, f.name) is not None
        }
    if hasattr(emb, "_asdict"):
        return {k: v for k, v in emb._asdict().items() if v is not None}
    if isinstance(emb, torch.Tensor):
        return {"context": emb}
    raise ValueError(f"encode_fn returned {type(emb).__name__}; expected TextEmbedding or dict")


def _encode_captions(captions: list[str]) -> dict[str, torch.Tensor]:
    """Captions as one uint8 tensor of UTF-8 joined by NUL (safetensors stores tensors only)."""
    data = "\0".join(captions).encode("utf-8")
    return {"captions_utf8": torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())}


def _decode_captions(tensors: dict[str, torch.Tensor]) -> list[str]:
    return tensors["captions_utf8"].numpy().tobytes().decode("utf-8").split("\0")


class LatentDataset(Dataset):
    """Items {"latent": (C, h, w), "caption": str} from cached latents; with `low` (a latent
    upscaler's small images, one per latent) also {"low": (C', h', w')}."""

    def __init__(self, latents: torch.Tensor, captions: list[str], low: torch.Tensor | None = None):
        if len(latents) != len(captions) or (low is not None and len(low) != len(latents)):
            lows = "" if low is None else f", {len(low)} small images"
            raise ValueError(f"{len(latents)} latents but {len(captions)} captions{lows}")
        self.latents, self.captions, self.low = latents, captions, low

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict:
        item = {"latent": self.latents[index], "caption": self.captions[index]}
        if self.low is not None:
            item["low"] = self.low[index]
        return item
