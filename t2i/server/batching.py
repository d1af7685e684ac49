"""One sampler call for several compatible requests: per-image prompts and seeds.

A server sees many small requests that differ only in prompt and seed; running them as one
batch shares every network call. `generate_items` of the generation protocol (t2i/protocol.py)
draws image i from items[i]'s prompt and seed, so image i of a batch equals the image the model
makes alone from items[i] (up to rounding).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import astuple, replace

import torch

from t2i.images import to_pil
from t2i.params import GenerationParams, png_info
from t2i.protocol import Generator


def batch_key(p: GenerationParams) -> tuple:
    """Requests with equal keys can share one sampler call: all but prompt and seed agree."""
    return astuple(replace(p, prompt="", seed=0))


def expand(p: GenerationParams, n: int) -> list[GenerationParams]:
    """A request for n images -> n single-image params with seeds seed, seed + 1, ..."""
    return [replace(p, seed=p.seed + i) for i in range(n)]


@torch.no_grad()
def generate_batch(
    pipe: Generator, items: list[GenerationParams], callback: Callable | None = None
) -> torch.Tensor:
    """(len(items), C, H, W) images in [-1, 1]; image i from prompt_i and seed_i."""
    if not items:
        raise ValueError("generate_batch needs at least one item")
    first = items[0]
    for p in items:  # each was checked when its request was made (Generator.params)
        if batch_key(p) != batch_key(first):
            raise ValueError(f"items differ in more than prompt and seed: {p} vs {first}")
    return pipe.generate_items(items, callback)


def png_bytes(image: torch.Tensor, p: GenerationParams, model_hash: str = "") -> bytes:
    """(C, H, W) in [-1, 1] -> PNG bytes carrying p in the same text chunks as `save_png`."""
    buf = io.BytesIO()
    to_pil(image[None])[0].save(buf, format="PNG", pnginfo=png_info(p, model_hash))
    return buf.getvalue()
