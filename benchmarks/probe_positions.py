"""Does a shapes model follow position words? One object, asked for in each of the 9 cells.

For every (object, seed), the 9 prompts "a large red circle in the top left", "... at the top",
... differ only in the position phrase and start from the same noise. A model that reads the
phrase puts the object in the asked cell; one that ignores it draws the same picture 9 times.
Reports the judge's hit rate (object found in the asked cell; chance 1/9 for a random cell) and
the mean absolute pixel change between the prompts of one seed (0: the phrase changed nothing).

The text side, `--text`: how much the frozen text encoder's per-token states move when one word
of a caption changes (colour, shape, size or position), at the changed token and elsewhere; a
word that barely moves the states is one the UNet has a weak signal to learn from.

    python3 benchmarks/probe_positions.py MODEL [MODEL ...] --seeds 4
    python3 benchmarks/probe_positions.py --text
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import t2i
from t2i.data.judge import judge
from t2i.data.shapes import CELL_PHRASES

OBJECTS = ("large red circle", "large blue square", "small yellow star")


def probe(model: str, seeds: int, steps: int, guidance: float) -> dict:
    pipe = t2i.load(model, bf16=True)
    hits, changes = [], []
    for obj in OBJECTS:
        for seed in range(seeds):
            images = []
            for phrase in CELL_PHRASES.values():
                prompt = f"a {obj} {phrase}"
                image = pipe(prompt, steps=steps, guidance=guidance, seed=seed)[0]
                verdict = judge(image, prompt)
                hits.append(verdict.by_category().get("position", False))
                images.append(np.asarray(image, dtype=np.float32))
            stack = np.stack(images)
            changes.append(float(np.abs(stack - stack.mean(0)).mean()))
    return {"position_hit_rate": float(np.mean(hits)), "pixel_change": float(np.mean(changes))}


CAPTION = "a large red circle in the top left"
WORD_SWAPS = {  # the kind of word -> (word in CAPTION, the word that replaces it)
    "colour": ("red", "blue"),
    "shape": ("circle", "square"),
    "size": ("large", "small"),
    "position (top/bottom)": ("top", "bottom"),
    "position (left/right)": ("left", "right"),
}


def text_state_changes() -> None:
    from t2i.training.data import TextCache

    text = TextCache.load("minilm", 40)
    print(f'caption "{CAPTION}", one word changed; change = |a - b| / |a| per token')
    print("| word changed | change at the word | mean change elsewhere |")
    print("|---|---|---|")
    for kind, (old, new) in WORD_SWAPS.items():
        context, mask = text([CAPTION, CAPTION.replace(old, new)])
        a, b = context[0][mask[0]], context[1][mask[1]]  # same length: one word for another
        change = (a - b).norm(dim=-1) / a.norm(dim=-1)
        at = int(change.argmax())
        rest = torch.cat([change[:at], change[at + 1 :]]).mean()
        print(f"| {kind} ({old} -> {new}) | {change[at]:.2f} | {rest:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="model folders or bundled names")
    ap.add_argument("--text", action="store_true", help="the text encoder's side (no model)")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.text:
        text_state_changes()
    if not args.models:
        return
    n = len(OBJECTS) * args.seeds * len(CELL_PHRASES)
    print(f"{n} images per model ({args.steps} steps, guidance {args.guidance}); chance 0.11")
    print("| model | position hit rate | mean pixel change across the 9 phrases |")
    print("|---|---|---|")
    for model in args.models:
        r = probe(model, args.seeds, args.steps, args.guidance)
        print(f"| {model} | {r['position_hit_rate']:.2f} | {r['pixel_change']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
