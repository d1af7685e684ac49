"""The emoji style judge: a classifier of nine art styles (the eight of the emoji data set and
Symbola's monochrome glyphs, t2i/data/emoji_symbola.py) trained here on real images, to measure
whether a generated image is in the style its prompt asks for. It judges adapters and never
trains a generator. Its network is the Fashion-MNIST classifier's (t2i/evaluation/classifier.py)
at 64 px RGB; one emoji subject in five (by a hash of its key, `heldout_subject`) is held out of
training in every style, and the card gives the accuracy on those unseen subjects.

    python3 -m t2i.evaluation.emoji_style --data data_cache/emoji64 \\
        --out t2i/evaluation/extractors/emoji_style          # about 5 minutes on 2 cores

    from t2i.evaluation.emoji_style import load_style_judge, style_accuracy
    style_accuracy(load_style_judge(), images, "symbola")      # images (N, 3, 64, 64) in [-1, 1]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from t2i.data.emoji_sources import STYLES, base_key
from t2i.data.emoji_symbola import STYLE as SYMBOLA
from t2i.data.emoji_symbola import heldout_subject, symbola_images
from t2i.evaluation.classifier import (
    ClassifierConfig,
    FashionClassifier,
    load_classifier,
    save_classifier,
)

CLASSES = (*STYLES, SYMBOLA)
KIND = "emoji_style_classifier"
BUNDLED_DIR = Path(__file__).parent / "extractors" / "emoji_style"
CONFIG = ClassifierConfig(
    image_size=64, in_channels=3, channels=(32, 64, 128, 128), num_classes=len(CLASSES)
)


def real_images(emoji_dir: str | Path, heldout: bool) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, 64, 64, 3), labels (N,)) of every real image of the subjects held out
    (heldout=True) or not: the emoji folder's eight styles and Symbola's renders."""
    from PIL import Image

    root = Path(emoji_dir)
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} does not exist: build it with t2i data emoji --out {root}")
    images, labels = [], []
    for line in meta.read_text().splitlines():
        row = json.loads(line)
        if heldout_subject(base_key(row["key"])) != heldout:
            continue
        with Image.open(root / row["file_name"]) as im:
            images.append(np.asarray(im.convert("RGB").resize((64, 64))))
        labels.append(CLASSES.index(row["style"]))
    glyphs, _ = symbola_images(heldout)
    labels += [CLASSES.index(SYMBOLA)] * len(glyphs)
    return np.concatenate([np.stack(images), glyphs]), np.array(labels)


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], the generator's format."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train(emoji_dir: str, out: str, epochs: int = 4, batch: int = 128, seed: int = 0) -> dict:
    """Train the judge on the training subjects, class-balanced; write its folder and card."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    x, y = real_images(emoji_dir, heldout=False)
    model = FashionClassifier(CONFIG)
    steps = epochs * math.ceil(len(x) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.1)
    counts = np.bincount(y, minlength=len(CLASSES))
    weight = torch.tensor(len(y) / (len(CLASSES) * counts), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch].numpy()
            inputs = augment(to_input(x[idx]), gen)
            loss = F.cross_entropy(model(inputs), torch.from_numpy(y[idx]), weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    card = {
        "classes": list(CLASSES),
        "command": f"python3 -m t2i.evaluation.emoji_style --data {emoji_dir} --out {out}",
        "train_images": int(len(x)),
        "epochs": epochs,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    save_classifier(model.eval(), out, card, KIND)
    card |= heldout_scores(load_style_judge(out), emoji_dir)  # the fp16 weights as saved
    save_classifier(load_style_judge(out), out, card, KIND)
    return card


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips and one shift of up to 4 pixels per batch, white (the background) filling in."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dy, dx = torch.randint(0, 9, (2,), generator=gen).tolist()
    return F.pad(x, (4, 4, 4, 4), value=1.0)[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


def heldout_scores(judge: FashionClassifier, emoji_dir: str) -> dict:
    """Accuracy on the held-out subjects' real images, overall and per style."""
    x, y = real_images(emoji_dir, heldout=True)
    pred = np.array(predict_styles(judge, to_input(x)))
    truth = np.array([CLASSES[i] for i in y])
    per = {s: round(float((pred[truth == s] == s).mean()), 4) for s in CLASSES}
    return {
        "heldout_images": int(len(x)),
        "heldout_accuracy": round(float((pred == truth).mean()), 4),
        "heldout_accuracy_per_style": per,
    }


def load_style_judge(directory: str | Path = BUNDLED_DIR) -> FashionClassifier:
    return load_classifier(directory, KIND)


@torch.no_grad()
def predict_styles(judge: FashionClassifier, images: torch.Tensor) -> list[str]:
    """images (N, 3, 64, 64) in [-1, 1] -> the style each is drawn in."""
    logits = torch.cat([judge(images[i : i + 256]) for i in range(0, len(images), 256)])
    return [CLASSES[i] for i in logits.argmax(-1).tolist()]


def style_accuracy(judge: FashionClassifier, images: torch.Tensor, style: str | list[str]) -> float:
    """Share of images judged to be in `style` (one for all, or one per image)."""
    wanted = [style] * len(images) if isinstance(style, str) else list(style)
    unknown = set(wanted) - set(CLASSES)
    if unknown or len(wanted) != len(images):
        raise ValueError(f"styles {sorted(unknown)} for {len(images)} images; from {CLASSES}")
    got = predict_styles(judge, images)
    return sum(g == w for g, w in zip(got, wanted)) / max(len(images), 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="train the emoji style judge")
    ap.add_argument("--data", default="data_cache/emoji64", help="a t2i data emoji folder")
    ap.add_argument("--out", default=str(BUNDLED_DIR))
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args(argv)
    print(json.dumps(train(args.data, args.out, args.epochs), indent=2))


if __name__ == "__main__":
    main()
