"""Sixteen common emoji across the eight styles: a grid beside the real ones, and two figures.

Each row is one emoji in one style: the real emoji, then 4 seeds of each model. Two figures come
with it:
- the evaluation CLIP's reading: the share of images whose own name is the closest of the 16
  names, all 16 in the image's style (so style alone cannot answer it); the real emoji are the
  ceiling;
- looks: JSONs of verdicts per prompt and model ("yes" recognisable, "colours" the right colours
  only, "blob"), each written by whoever looked at the grid, summed up here one by one and as the
  mean share over the looks that judged a model.

    python3 benchmarks/emoji_common.py --model old=emoji --model new=runs/new/model \
        --data data_cache/emoji64 --scale 2 --out docs/samples/emoji_common.png

then, once someone has looked at the grid and written verdicts under the labels `old` and `new`,
the same command with `--json docs/training/emoji_common/figures.json --look LOOK.json` (repeat
`--look` for each look).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import t2i
from t2i.evaluation.emoji_clip import embed, load_emoji_clip
from t2i.models.text_encoder import PretrainedTextEncoder

# Chosen for being common, not for being easy: faces, animals, food, objects, nature, two per style.
COMMON = [
    ("grinning face", "twemoji"),
    ("birthday cake", "twemoji"),
    ("smiling face with sunglasses", "noto"),
    ("pizza", "noto"),
    ("face with tears of joy", "fluent-3d"),
    ("rocket", "fluent-3d"),
    ("red heart", "openmoji"),
    ("automobile", "openmoji"),
    ("thumbs up", "fluent-flat"),
    ("ghost", "fluent-flat"),
    ("dog face", "emojione"),
    ("fire", "emojione"),
    ("cat face", "fluent-color"),
    ("rainbow", "fluent-color"),
    ("frog", "openmoji-outline"),
    ("star", "openmoji-outline"),
]
SEEDS = 4
VERDICTS = ("yes", "colours", "blob")


def prompt(name: str, style: str) -> str:
    return f"{name} emoji, {style} style"


def real_images(data: Path) -> list[Image.Image]:
    """The untoned image of each COMMON emoji in its style, from the data folder's metadata."""
    found = {}
    for line in (data / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if not row.get("tones") and (row["name"], row["style"]) in COMMON:
            found.setdefault((row["name"], row["style"]), data / row["file_name"])
    missing = [pair for pair in COMMON if pair not in found]
    if missing:
        raise SystemExit(f"{data}: no untoned image for {missing}")
    return [Image.open(found[pair]).convert("RGB").resize((64, 64)) for pair in COMMON]


def names_in_style(clip, encoder) -> dict[str, torch.Tensor]:
    """Per style, the pooled text of the 16 names in that style: the 16-way choice's candidates."""
    names = [name for name, _ in COMMON]
    styles = sorted({style for _, style in COMMON})
    with torch.no_grad():
        return {s: encoder.encode([prompt(n, s) for n in names]).pooled for s in styles}


def clip16(images: list[Image.Image], styles: list[str], clip, texts: dict) -> np.ndarray:
    """For each image, the index of the closest of the 16 names in its style (evaluation CLIP)."""
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images])
    picks = []
    for image, style in zip(x.float() / 127.5 - 1.0, styles):
        img, txt = embed(clip, image[None], texts[style])
        picks.append(int((img @ txt.T).argmax()))
    return np.array(picks)


def paste(rows: list[list[Image.Image]], scale: int) -> Image.Image:
    side = 64 * scale
    grid = Image.new("RGB", (side * len(rows[0]) + 8, side * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            grid.paste(im.resize((side, side), Image.NEAREST), (c * side + 8 * (c > 0), r * side))
    return grid


def look_summary(path: Path, models: list[str]) -> dict:
    """One look's counts per model it judged (a look need not judge every model of the grid)."""
    looks = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for model in (m for m in models if m in looks):
        verdicts = looks[model]
        bad = {k: v for k, v in verdicts.items() if v not in VERDICTS}
        if bad or set(verdicts) != {prompt(*p) for p in COMMON}:
            raise SystemExit(f"{path}: {model} needs one of {VERDICTS} for each of the 16 prompts")
        counts = {v: sum(1 for x in verdicts.values() if x == v) for v in VERDICTS}
        out[model] = {**counts, "recognisable_share": counts["yes"] / len(COMMON)}
    return out


def looks_summary(paths: list[Path], models: list[str]) -> dict:
    """Each look by its file's name, and each model's mean share over the looks that judged it."""
    each = {path.stem: look_summary(path, models) for path in paths}
    missing = [m for m in models if not any(m in look for look in each.values())]
    if missing:
        raise SystemExit(f"no look judges {missing}: label the models as the looks name them")
    mean = {
        m: float(np.mean([look[m]["recognisable_share"] for look in each.values() if m in look]))
        for m in models
    }
    return {"each": each, "recognisable_share_mean": mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", action="append", required=True, help="bundled name or folder, or LABEL=FOLDER"
    )
    ap.add_argument("--data", type=Path, default=Path("data_cache/emoji64"))
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--out", required=True, help="the grid PNG")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument(
        "--look", type=Path, action="append", default=[], help="verdicts (JSON); repeatable"
    )
    args = ap.parse_args()
    prompts = [prompt(*p) for p in COMMON]
    clip = load_emoji_clip()
    texts = names_in_style(clip, PretrainedTextEncoder())
    styles = [style for _, style in COMMON]
    reals = real_images(args.data)
    right = np.arange(len(COMMON))
    figures = {"real": float((clip16(reals, styles, clip, texts) == right).mean())}
    rows = [[im] for im in reals]
    labels = [m.split("=", 1)[0] for m in args.model]
    for model, label in zip(args.model, labels):
        pipe = t2i.load(model.split("=", 1)[-1])
        made = [pipe(p, n=SEEDS, seed=0) for p in prompts]  # image i: seed i
        for row, images in zip(rows, made):
            row.extend(images)
        flat = [im for images in made for im in images]
        picks = clip16(flat, list(np.repeat(styles, SEEDS)), clip, texts)
        figures[label] = float((picks == np.repeat(right, SEEDS)).mean())
    paste(rows, args.scale).save(args.out)
    report = {"prompts": prompts, "seeds": SEEDS, "clip16_top1": figures}
    if args.look:
        report["looks"] = looks_summary(args.look, labels)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
