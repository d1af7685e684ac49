"""What the recipes need from the data layer: image datasets, cached text embeddings, latents."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset, IterableDataset


def open_dataset(
    spec: str, image_size: int, length: int = 100_000, channels: int = 3
) -> tuple[Dataset, int]:
    """The data layer's dataset for `--data` and its image channels; errors before any work.
    channels: what a folder's or shards' images become (1: grey, for a greyscale model); the
    built-in sets have their own."""
    from t2i.data import load_dataset
    from t2i.data.transforms import TransformConfig

    transform = TransformConfig(size=image_size, channels=channels)
    dataset = load_dataset(spec, image_size=image_size, length=length, transform=transform)
    first = next(iter(dataset)) if isinstance(dataset, IterableDataset) else dataset[0]
    if first["image"].shape[-1] != image_size:
        raise ValueError(f"data {spec!r} gives {first['image'].shape[-1]} px, not {image_size}")
    return dataset, first["image"].shape[0]


def report_unknown_words(encoder, captions: list[str], limit: int = 12) -> None:
    """Print which caption words the run's text encoder cannot read, and in how many captions:
    each becomes one unknown token, so the network cannot learn what they mean."""
    if os.environ.get("RANK", "0") != "0" or not hasattr(encoder, "unknown_words"):
        return
    counts = Counter(w for c in captions for w in encoder.unknown_words(c))
    if not counts:
        return
    listed = ", ".join(f"{w!r} in {n}" for w, n in counts.most_common(limit))
    more = f" and {len(counts) - limit} more" if len(counts) > limit else ""
    print(
        f"warning: {len(counts)} caption word(s) the text encoder cannot read (each becomes one "
        f"unknown token), of {len(captions)} captions: {listed}{more}",
        file=sys.stderr,
    )


TRAINED = "trained"  # --text_encoder value: a TextTransformer trained with the recipe's network


class TrainedText:
    """captions -> (context, mask) through a TextTransformer trained with the network; gradients
    flow. As TextCache, it holds its encoder as `.encoder` (what a model folder saves)."""

    def __init__(self, encoder):
        self.encoder, self.dim = encoder, encoder.dim

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.encoder.encode(captions)
        return emb.context, emb.mask


def text_condition(captions: list[str], dropout: float, encode, rng) -> dict:
    """{"context", "context_mask"} of a batch's captions, each dropped to "" with probability
    `dropout` (classifier-free guidance's unconditional case): the step's first draw."""
    drop = rng.rand() < dropout
    context, mask = encode(["" if d else c for d, c in zip(drop.tolist(), captions)])
    return {"context": context, "context_mask": mask}


class TextCache:
    """The frozen pretrained text encoder + an in-memory cache keyed by caption text.

    Captions are padded to a fixed `max_tokens`, which makes each caption's embedding independent
    of the other captions in its batch (checked bit for bit in the tests), so a cached value equals
    a fresh one and a resumed run repeats the straight run exactly.
    """

    def __init__(self, encoder, max_tokens: int):
        self.encoder, self.max_tokens = encoder, max_tokens
        self.dim = encoder.dim
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def load(name: str, max_tokens: int) -> TextCache:
        from t2i.models.text_encoder import PretrainedTextEncoder, PretrainedTextEncoderConfig

        path = None if name == "minilm" else name
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"text encoder {name!r}: use 'minilm' or a local HF folder")
        cfg = PretrainedTextEncoderConfig(path=path, max_length=max_tokens)
        return TextCache(PretrainedTextEncoder(cfg), max_tokens)

    def _encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder
        ids, mask = enc.tokenize(captions, length=self.max_tokens)
        states = enc.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        return states, mask

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> context (B, L, D) float32, mask (B, L) bool."""
        missing = sorted({c for c in captions if c not in self._cache})
        if missing:
            with torch.no_grad(), torch.autocast("cpu", enabled=False):
                ctx, mask = self._encode(missing)
            for i, c in enumerate(missing):
                self._cache[c] = (ctx[i].float(), mask[i])
        pairs = [self._cache[c] for c in captions]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def component_dir(folder: str | Path, name: str) -> Path:
    """A model folder's `name`/ subfolder, or `folder` itself when it is the component folder."""
    path = Path(folder)
    return path / name if (path / name).is_dir() else path


def load_frozen_autoencoder(folder: str | Path, digest: str | None = None):
    """(autoencoder, {"path", "digest"}) of a model folder holding autoencoder/, or of that folder.

    digest: when given (export of a recorded run), the weights must still be the ones trained on.
    """
    from t2i.checkpoint import WEIGHTS_NAME, load_component
    from t2i.data.cache import file_digest

    if not Path(folder).is_dir():
        raise FileNotFoundError(f"autoencoder folder {folder!r} does not exist")
    path = component_dir(folder, "autoencoder")
    ae = load_component(path).requires_grad_(False)  # checks the files: clear errors first
    found = file_digest(path / WEIGHTS_NAME)
    if digest is not None and found != digest:
        raise ValueError(
            f"autoencoder {path} changed since the run was trained on it "
            f"(digest {found[:12]}, run recorded {digest[:12]}); give the original folder"
        )
    return ae, {"path": str(Path(folder).resolve()), "digest": found}


def latent_dataset(
    dataset: Dataset,
    encode_fn,
    key: dict,
    cache_dir: str,
    progress: bool = True,
    low_res: int = 0,
) -> Dataset:
    """Items {"latent", "caption"}: the data set encoded once by `encode_fn` (images -> latents,
    e.g. an autoencoder's to_latent), cached on disk under `key`. low_res > 0 (a latent upscaler):
    items also hold "low", the image shrunk to low_res x low_res pixels, cached the same way."""
    from t2i.data.cache import LatentDataset, cached_latents
    from t2i.images import shrink

    if isinstance(dataset, IterableDataset):
        raise ValueError("latent training needs a fixed data set (not shards): latents are cached")
    latents, captions = cached_latents(dataset, encode_fn, key, cache_dir, progress=progress)
    low = None
    if low_res:
        low, _ = cached_latents(
            dataset,
            lambda images: shrink(images, (low_res, low_res)),
            {**key, "low_res": low_res},
            cache_dir,
            progress=progress,
        )
    return LatentDataset(latents, captions, low)


def first_items(dataset: Dataset, n: int) -> list[dict]:
    """The first n items (fewer if the data set is smaller): the sample grids' fixed inputs."""
    if isinstance(dataset, IterableDataset):
        return [item for item, _ in zip(dataset, range(n))]
    return [dataset[i] for i in range(min(n, len(dataset)))]


def first_captions(dataset: Dataset, n: int) -> list[str]:
    """The captions of the first n items: fixed prompts for the sample grids."""
    return [item["caption"] for item in first_items(dataset, n)]
