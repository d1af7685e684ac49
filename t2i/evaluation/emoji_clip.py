"""The emoji CLIP trained here: an image encoder aligned to the frozen pretrained text encoder.

The text side is the pooled sentence embedding of `PretrainedTextEncoder` (all-MiniLM-L6-v2),
frozen; only a linear projection of it, the image encoder and the temperature are trained, with
CLIP's symmetric InfoNCE (Radford et al. 2021) on the emoji data's `train` split. It gives CLIP
score and R-precision for emoji models (no OpenAI CLIP weights can be downloaded here).

    clip = load_emoji_clip()                               # t2i.models.clip.CLIP, eval mode
    img = clip.encode_image(to_input(clip, images))        # (B, 3, 64, 64) in [-1, 1] -> (B, E)
    txt = clip.encode_text(text_encoder.encode(captions))  # pooled (B, 384) -> (B, E)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2i.models.clip import CLIP, CLIPConfig
from t2i.models.text_encoder import TextEmbedding

BUNDLED_DIR = Path(__file__).parent / "extractors" / "emoji_clip"


def emoji_clip_config(**overrides) -> CLIPConfig:
    """The shipped size: 32 px RGB input, four stages (16..128 channels), a 256-d joint space."""
    base = dict(image_size=32, channels=(16, 32, 64, 128), groups=8, embed_dim=256, text_dim=384)
    return CLIPConfig(**{**base, **overrides})


@dataclass
class ClipTrainConfig:
    epochs: int = 6
    batch_size: int = 256  # InfoNCE negatives per step = batch_size - 1
    lr: float = 2e-3  # peak of linear warmup (5%) then cosine to 0
    weight_decay: float = 0.05
    seed: int = 0
    threads: int = 0  # torch threads while training; 0: as is


def load_rows(root: str | Path, split: str) -> list[dict]:
    """Rows of the emoji data's metadata.jsonl for one split ("train" or "heldout")."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown emoji split {split!r}; choose from ['heldout', 'train']")
    meta = Path(root) / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} does not exist: build it with `t2i data emoji`")
    rows = [json.loads(line) for line in meta.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("split") == split]


def load_images(root: str | Path, rows: list[dict]) -> torch.Tensor:
    """(N, 3, S, S) float in [-1, 1] from the rows' image files (RGB, as the data layer)."""
    arrays = [np.asarray(Image.open(Path(root) / r["file_name"]).convert("RGB")) for r in rows]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _lr_at(step: int, total: int, peak: float) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def to_input(clip: CLIP, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 3, s, s), s = config.image_size, by s x s box averaging (64 -> 32 px:
    the encoder sees half-size images, 4x cheaper; a box filter as PIL's BOX resize)."""
    s = clip.config.image_size
    if images.ndim != 4 or images.shape[2] != images.shape[3] or images.shape[2] % s:
        raise ValueError(f"images must be (B, 3, S, S), S a multiple of {s}; got {images.shape}")
    return torch.nn.functional.avg_pool2d(images, images.shape[2] // s)


def pooled_text(pooled: torch.Tensor) -> TextEmbedding:
    """A TextEmbedding holding only the pooled vectors (all CLIP.encode_text reads)."""
    return TextEmbedding(None, None, pooled)


@torch.no_grad()
def embed(clip: CLIP, images: torch.Tensor, pooled: torch.Tensor, batch: int = 500):
    """(image_emb (N, E), text_emb (N, E)) unit vectors, in batches."""
    clip.eval()
    x = to_input(clip, images)
    parts = [clip.encode_image(x[i : i + batch]) for i in range(0, len(x), batch)]
    return torch.cat(parts), clip.encode_text(pooled_text(pooled))


def train_emoji_clip(
    images: torch.Tensor,
    pooled: torch.Tensor,
    config: CLIPConfig,
    cfg: ClipTrainConfig,
    log=print,
) -> tuple[CLIP, dict]:
    """InfoNCE over shuffled batches of (image, pooled caption embedding) pairs -> (clip, card).

    images: (N, 3, S, S) in [-1, 1] (box-downsampled to config.image_size); pooled: (N, 384)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)
    try:
        return _train(images, pooled, config, cfg, log)
    finally:
        torch.set_num_threads(threads)


def _train(images, pooled, config, cfg, log) -> tuple[CLIP, dict]:
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    clip = CLIP(config)
    images = to_input(clip, images)
    decay = [p for n, p in clip.named_parameters() if p.ndim > 1]
    rest = [p for n, p in clip.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)
    per_epoch = len(images) // cfg.batch_size
    total, step, t0 = cfg.epochs * per_epoch, 0, time.time()
    for epoch in range(cfg.epochs):
        clip.train()
        order = torch.randperm(len(images), generator=g)
        for b in range(per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, cfg.lr)
            loss = clip.loss(images[idx], pooled_text(pooled[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if log is not None:
            log(
                f"epoch {epoch + 1}/{cfg.epochs} loss {loss.item():.4f} "
                f"elapsed {time.time() - t0:.0f}s"
            )
    card = {"train_seconds": round(time.time() - t0), "train_config": dataclasses.asdict(cfg)}
    return clip.eval(), card


def load_emoji_clip(directory: str | Path = BUNDLED_DIR) -> CLIP:
    """The shipped emoji CLIP (a `clip` component folder, fp16 weights) in fp32, eval mode."""
    from t2i.checkpoint import load_component

    clip = load_component(directory)
    if not isinstance(clip, CLIP):
        raise ValueError(f"{directory} holds a {type(clip).__name__}, not a CLIP")
    return clip


def read_card(directory: str | Path = BUNDLED_DIR) -> dict:
    """card.json of the shipped emoji CLIP: R-precision reached, data, recipe, command."""
    path = Path(directory) / "card.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return json.loads(path.read_text())
