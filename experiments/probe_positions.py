"""Does a shapes model follow position words? One object, asked for in each of the 9 cells.

For every (object, seed), the 9 prompts "a large red circle in the top left", "... at the top",
... differ only in the position phrase and start from the same noise. A model that reads the
phrase puts the object in the asked cell; one that ignores it draws the same picture 9 times.
Reports the judge's hit rate (object found in the asked cell; chance 1/9 for a random cell) and
the mean absolute pixel change between the prompts of one seed (0: the phrase changed nothing).
Models that draw below the judge's 48 px (a cascade's base model, 8x8) are scored by colour: a hit
when the cell whose mean colour is nearest the object's colour is the asked one.

Relations, `--relations`: two objects, "a large red circle above a large blue square", each of
the four relation words from the same noise. Reports how often the relation holds among the
images where the judge finds both objects (chance for two objects in random cells: 27/72 = 0.375;
a model that ignores the word draws the same layout for "above" and "below").

The text side, `--text`: how much the frozen text encoder's per-token states move when one word
of a caption changes (colour, shape, size or position), at the changed token and elsewhere; a
word that barely moves the states is one the UNet has a weak signal to learn from.

    python3 experiments/probe_positions.py MODEL [MODEL ...] --seeds 4
    python3 experiments/probe_positions.py MODEL --relations --seeds 4
    python3 experiments/probe_positions.py --text
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import t2i
from t2i.data.judge import MIN_SIZE, judge
from t2i.data.shapes import CELL_PHRASES, COLOURS, GRID

OBJECTS = ("large red circle", "large blue square", "small yellow star")


def probe(model: str, seeds: int, steps: int, guidance: float) -> dict:
    pipe = t2i.load(model, bf16=True)
    hits, changes = [], []
    for obj in OBJECTS:
        for seed in range(seeds):
            images = []
            for cell, phrase in CELL_PHRASES.items():
                prompt = f"a {obj} {phrase}"
                image = pipe(prompt, steps=steps, guidance=guidance, seed=seed)[0]
                if image.size[0] >= MIN_SIZE:
                    hit = judge(image, prompt).by_category().get("position", False)
                else:
                    hit = nearest_colour_cell(image, obj.split()[1]) == cell
                hits.append(hit)
                images.append(np.asarray(image, dtype=np.float32))
            stack = np.stack(images)
            changes.append(float(np.abs(stack - stack.mean(0)).mean()))
    return {"position_hit_rate": float(np.mean(hits)), "pixel_change": float(np.mean(changes))}


RELATIONS = ("above", "below", "to the left of", "to the right of")


def probe_relations(model: str, seeds: int, steps: int, guidance: float) -> dict:
    """Per relation word: share of images (both objects found) where the relation holds."""
    pipe = t2i.load(model, bf16=True)
    found, held = dict.fromkeys(RELATIONS, 0), dict.fromkeys(RELATIONS, 0)
    pairs = [(a, b) for a in OBJECTS for b in OBJECTS if a != b]
    for a, b in pairs:
        for seed in range(seeds):
            for rel in RELATIONS:
                prompt = f"a {a} {rel} a {b}"
                image = pipe(prompt, steps=steps, guidance=guidance, seed=seed)[0]
                holds = judge(image, prompt).by_category()
                if holds["binding"]:  # both objects found, each with its colour and shape
                    found[rel] += 1
                    held[rel] += holds["position"]
    rates = {rel: held[rel] / max(found[rel], 1) for rel in RELATIONS}
    n = len(pairs) * seeds * len(RELATIONS)
    return {"relation_hit_rate": rates, "both_found": sum(found.values()) / n}


def nearest_colour_cell(image, colour: str) -> tuple[int, int]:
    """(row, col) of the grid cell whose mean colour is nearest `colour` (for small images)."""
    side = image.size[0] * GRID  # nearest-enlarged, every cell is a whole number of pixels
    a = np.asarray(image.resize((side, side), 0), dtype=np.float32)  # 0: nearest
    k = side // GRID
    means = a.reshape(GRID, k, GRID, k, 3).mean(axis=(1, 3))
    dist = np.linalg.norm(means - np.array(COLOURS[colour], dtype=np.float32), axis=-1)
    row, col = np.unravel_index(int(dist.argmin()), dist.shape)
    return int(row), int(col)


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
    ap.add_argument("--relations", action="store_true", help="two objects and a relation word")
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
    if args.relations:
        n = len(OBJECTS) * (len(OBJECTS) - 1) * args.seeds * len(RELATIONS)
        print(f"{n} images per model; relation holds (chance 0.375), among images with both found")
        print("| model | both found | " + " | ".join(RELATIONS) + " |")
        print("|---" * (len(RELATIONS) + 2) + "|")
        for model in args.models:
            r = probe_relations(model, args.seeds, args.steps, args.guidance)
            rates = " | ".join(f"{r['relation_hit_rate'][rel]:.2f}" for rel in RELATIONS)
            print(f"| {model} | {r['both_found']:.2f} | {rates} |", flush=True)
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
