"""Latent and text-embedding caches: computed once, reused, recomputed when data or model change."""

from dataclasses import dataclass

import pytest
import torch

from t2i.data.cache import LatentDataset, cached_latents, cached_text, file_digest
from t2i.data.shapes import ShapesDataset


class CountingEncoder:
    """A fixed 'autoencoder': 4x average pooling to 4 channels; counts its calls."""

    def __init__(self, scale=1.0):
        self.calls, self.scale = 0, scale

    def __call__(self, x):
        self.calls += 1
        z = torch.nn.functional.avg_pool2d(x, 4)
        return self.scale * torch.cat([z, z.mean(1, keepdim=True)], 1)


def test_latents_are_computed_once_and_keyed_by_model(tmp_path):
    ds = ShapesDataset(length=10)
    enc = CountingEncoder()
    key = {"data": "shapes:train:10", "model": "ae-v1"}
    z, caps = cached_latents(ds, enc, key, tmp_path, batch_size=4)
    assert z.shape == (10, 4, 16, 16) and enc.calls == 3
    assert caps == [ds[i]["caption"] for i in range(10)]
    z2, caps2 = cached_latents(ds, enc, key, tmp_path, batch_size=4)
    assert enc.calls == 3 and torch.equal(z, z2) and caps2 == caps  # read back, not recomputed
    other = CountingEncoder(scale=2.0)
    z3, _ = cached_latents(ds, other, {**key, "model": "ae-v2"}, tmp_path)
    assert other.calls == 1 and torch.allclose(z3, 2 * z)
    cached_latents(ShapesDataset(length=6), enc, key, tmp_path)  # other data: recomputed
    assert enc.calls == 4 and len(list(tmp_path.glob("latents-*.safetensors"))) == 3
    item = LatentDataset(z, caps)[3]
    assert torch.equal(item["latent"], z[3]) and item["caption"] == caps[3]


@dataclass
class TextEmbedding:
    context: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


def test_text_cache(tmp_path):
    calls = []

    def encode(prompts):
        calls.append(len(prompts))
        n = len(prompts)
        ctx = torch.arange(n * 5 * 3, dtype=torch.float32).reshape(n, 5, 3)
        mask = torch.tensor([[True] * (2 + i % 3) + [False] * (3 - i % 3) for i in range(n)])
        return TextEmbedding(ctx, mask, ctx.mean(1))

    caps = [f"a red circle {i}" for i in range(7)]
    a = cached_text(caps, encode, {"model": "minilm"}, tmp_path, batch_size=4)
    b = cached_text(caps, encode, {"model": "minilm"}, tmp_path, batch_size=4)
    assert calls == [4, 3]
    assert b["mask"].dtype == torch.bool and all(torch.equal(a[k], b[k]) for k in a)
    cached_text(caps[:6], encode, {"model": "minilm"}, tmp_path)  # other captions
    assert calls == [4, 3, 6]


def test_a_pooled_only_text_cache_is_read_back(tmp_path):
    """An encoder that gives pooled vectors alone (the emoji CLIP's) caches no mask: a second
    run reads its file back instead of failing on the missing key."""
    calls = []

    def pooled(captions):
        calls.append(len(captions))
        return {"pooled": torch.ones(len(captions), 4)}

    first = cached_text(["a", "b"], pooled, {"encoder": "p"}, tmp_path)
    again = cached_text(["a", "b"], pooled, {"encoder": "p"}, tmp_path)
    assert calls == [2] and torch.equal(first["pooled"], again["pooled"])
    assert set(again) == {"pooled"}


def test_file_digest_and_errors(tmp_path):
    w = tmp_path / "w.bin"
    w.write_bytes(b"abc")
    d1 = file_digest(w)
    w.write_bytes(b"abd")
    assert d1 != file_digest(w) and len(d1) == 64
    with pytest.raises(ValueError, match="empty"):
        cached_latents(ShapesDataset(length=0), CountingEncoder(), {}, tmp_path)
