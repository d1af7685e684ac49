"""The emoji CLIP trained here: an image encoder aligned to the frozen pretrained text encoder.

The text side is the pooled sentence embedding of `PretrainedTextEncoder` (all-MiniLM-L6-v2),
frozen; only a linear projection of it, the image encoder and the temperature are trained, with
CLIP's symmetric InfoNCE (Radford et al. 2021) on the emoji data's `train` split. It gives CLIP
score and R-precision for emoji models (no OpenAI CLIP weights can be downloaded here).

    clip = load_emoji_clip()                               # t2i.models.clip.CLIP, eval mode
    img = clip.encode_image(to_input(clip, images))        # (B, 3, 64, 64) in [-1, 1] -> (B, E)
    txt = clip.encode_text(text_encoder.encode(captions))  # pooled (B, 384) -> (B, E)

Trained by the emoji CLIP recipe (t2i/training/emoji_clip.py): the shipped folder is its
`emoji_clip` preset, `t2i train emoji_clip --data data_cache/emoji64 --preset emoji_clip`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2i.evaluation.metrics import clip_score, r_precision
from t2i.models.clip import CLIP, CLIPConfig
from t2i.models.text_encoder import TextEmbedding

BUNDLED_DIR = Path(__file__).parent / "extractors" / "emoji_clip"


def emoji_clip_config(**overrides) -> CLIPConfig:
    """The shipped size: 32 px RGB input, four stages (16..128 channels), a 256-d joint space."""
    base = dict(image_size=32, channels=(16, 32, 64, 128), groups=8, embed_dim=256, text_dim=384)
    return CLIPConfig(**{**base, **overrides})


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


def retrieval_scores(
    clip: CLIP, images: torch.Tensor, pooled: torch.Tensor, captions: list[str], pool: int = 100
) -> dict:
    """What the card states of (image, caption) pairs: R-precision among `pool` captions (top 1,
    and top 5 where pool >= 5; identical captions are never each other's distractors) and the
    CLIP score of matched pairs beside that of shuffled ones.

    images: (N, 3, S, S) in [-1, 1]; pooled: (N, 384) caption embeddings; captions: N strings."""
    img, txt = embed(clip, images, pooled)
    groups = np.unique(captions, return_inverse=True)[1]
    out: dict = {"n": len(images)}
    for k in [k for k in (1, 5) if k <= pool]:
        r = r_precision(img, txt, k=k, pool=pool, groups=groups)
        out[f"r_precision_top{k}_of_{pool}"] = round(r, 4)
    out["clip_score_matched"] = round(clip_score(img, txt), 2)
    out["clip_score_shuffled"] = round(clip_score(img, torch.roll(txt, 1, dims=0)), 2)
    return out


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
