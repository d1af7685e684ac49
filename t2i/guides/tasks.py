"""What a guide's outputs mean: the labels a prompt asks for, and log p(prompt | x_t).

    fashion  one class of ten, named in the prompt ("a photo of a sandal", "sandals")
    shapes   one softmax per grid cell over empty or a colour-shape pair, one over the two sizes,
             one over the backgrounds; a prompt's probability sums over every placement of its
             objects on the grid that the prompt allows (stated cells, relations), the other
             cells empty, so relations and unplaced objects are guided exactly
    clip     the noisy image embedding against the prompt's text embedding (GLIDE's f(x_t).g(c))

Each task's `targets` is a dict of tensors with the batch first, so a batch of prompts travels
through the sampler's condition dict beside the text states.
"""

from __future__ import annotations

import itertools
import re

import torch

from t2i.data.fashion import CLASSES
from t2i.data.judge import relation_holds
from t2i.data.shapes import BACKGROUNDS, COLOURS, GRID, SHAPES, SIZES, parse_caption

# ---------------------------------------------------------------- fashion


def _class_pattern(name: str) -> re.Pattern:
    """The class name or its plural as words of their own ("shirt" is not in "t-shirt")."""
    words = [name, "trousers" if name == "pair of trousers" else name + "s"]
    alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")


_CLASS_RE = [_class_pattern(name) for name in CLASSES]


def fashion_label(prompt: str) -> int:
    """The one Fashion-MNIST class a prompt names; ValueError when it names none or several."""
    text = prompt.lower()
    found = [i for i, pattern in enumerate(_CLASS_RE) if pattern.search(text)]
    if len(found) != 1:
        what = "none" if not found else ", ".join(CLASSES[i] for i in found)
        raise ValueError(
            f"the fashion classifier guide steers towards one class named in the prompt; "
            f"{prompt[:80]!r} names {what}; classes: {', '.join(CLASSES)}"
        )
    return found[0]


def fashion_targets(prompts: list[str]) -> dict[str, torch.Tensor]:
    return {"label": torch.tensor([fashion_label(p) for p in prompts])}


def fashion_log_prob(pooled: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return pooled.log_softmax(-1).gather(1, label[:, None].long())[:, 0]


# ---------------------------------------------------------------- shapes

PAIRS = [(c, s) for c in COLOURS for s in SHAPES]  # cell class k + 1; 0 is an empty cell
SIZE_NAMES = tuple(SIZES)
BACKGROUND_NAMES = tuple(BACKGROUNDS)
CELL_CLASSES = 1 + len(PAIRS)
SHAPES_CELL_OUTPUTS = CELL_CLASSES + len(SIZE_NAMES)
CELLS = [(r, c) for r in range(GRID) for c in range(GRID)]


def cell_labels(objects) -> tuple[list[int], list[int]]:
    """A scene's objects (each with shape, colour, size, cell) -> per-cell class and size labels
    (-1: an empty cell has no size); what the shapes guide is trained to read."""
    classes, sizes = [0] * len(CELLS), [-1] * len(CELLS)
    for o in objects:
        k = CELLS.index(tuple(o.cell))
        classes[k] = 1 + PAIRS.index((o.colour, o.shape))
        sizes[k] = SIZE_NAMES.index(o.size)
    return classes, sizes


def placements(prompt: str) -> tuple[list[list[int]], list[list[int]], int]:
    """Every labelling of the 9 cells the prompt allows: (classes per placement, sizes per
    placement (-1: not stated), background (-1: not stated)); ValueError for a prompt the guide
    cannot read (outside the caption grammar, a colour or shape it was not trained on)."""
    try:
        spec = parse_caption(prompt)
    except ValueError as err:
        raise ValueError(
            f"the shapes classifier guide reads prompts of the shapes grammar: {err}"
        ) from err
    for o in spec.objects:
        if (o.colour, o.shape) not in PAIRS:
            raise ValueError(
                f"the shapes classifier guide knows colours {list(COLOURS)} and shapes "
                f"{list(SHAPES)}; {prompt[:80]!r} asks for a {o.colour} {o.shape}"
            )
    if spec.count != len(spec.objects):
        raise ValueError(
            f"{prompt[:80]!r}: a count of {spec.count} for {len(spec.objects)} objects"
        )
    classes, sizes = [], []
    for cells in itertools.permutations(CELLS, len(spec.objects)):
        if any(o.cell is not None and o.cell != cell for o, cell in zip(spec.objects, cells)):
            continue
        if not all(relation_holds(cells[a], rel, cells[b]) for a, rel, b in spec.relations):
            continue
        row_c, row_s = [0] * len(CELLS), [-1] * len(CELLS)
        for o, cell in zip(spec.objects, cells):
            row_c[CELLS.index(cell)] = 1 + PAIRS.index((o.colour, o.shape))
            if o.size is not None:
                row_s[CELLS.index(cell)] = SIZE_NAMES.index(o.size)
        classes.append(row_c)
        sizes.append(row_s)
    if not classes:
        raise ValueError(f"{prompt[:80]!r}: no placement on the 3x3 grid satisfies it")
    background = BACKGROUND_NAMES.index(spec.background) if spec.background else -1
    return classes, sizes, background


def shapes_targets(prompts: list[str]) -> dict[str, torch.Tensor]:
    """Placements of each prompt, padded to the batch's most: cells and sizes (B, A, 9),
    valid (B, A), background (B,)."""
    each = [placements(p) for p in prompts]
    most = max(len(c) for c, _, _ in each)
    cells = torch.zeros(len(prompts), most, len(CELLS), dtype=torch.long)
    sizes = torch.full((len(prompts), most, len(CELLS)), -1, dtype=torch.long)
    valid = torch.zeros(len(prompts), most, dtype=torch.bool)
    for i, (c, s, _) in enumerate(each):
        cells[i, : len(c)], sizes[i, : len(s)], valid[i, : len(c)] = (
            torch.tensor(c),
            torch.tensor(s),
            True,
        )
    background = torch.tensor([bg for _, _, bg in each])
    return {"cells": cells, "sizes": sizes, "valid": valid, "background": background}


def shapes_log_prob(
    pooled: torch.Tensor,
    cell_logits: torch.Tensor,
    cells: torch.Tensor,
    sizes: torch.Tensor,
    valid: torch.Tensor,
    background: torch.Tensor,
) -> torch.Tensor:
    """log sum over the prompt's placements of prod over cells p(cell's label) (the cells read
    independently), plus log p(background) where stated. cell_logits (B, 33, 3, 3)."""
    flat = cell_logits.flatten(2).transpose(1, 2)  # (B, 9, 33)
    cls_lp = flat[..., :CELL_CLASSES].log_softmax(-1)
    size_lp = flat[..., CELL_CLASSES:].log_softmax(-1)
    a = cells.shape[1]
    per_cell = cls_lp[:, None].expand(-1, a, -1, -1).gather(-1, cells[..., None])[..., 0]
    size_term = size_lp[:, None].expand(-1, a, -1, -1).gather(-1, sizes.clamp(min=0)[..., None])
    per_cell = per_cell + size_term[..., 0] * (sizes >= 0)
    joint = per_cell.sum(-1).masked_fill(~valid, float("-inf"))  # (B, A)
    log_p = joint.logsumexp(-1)
    bg_lp = pooled.log_softmax(-1).gather(1, background.clamp(min=0)[:, None])[:, 0]
    return log_p + bg_lp * (background >= 0)


# ---------------------------------------------------------------- dispatch


def targets(task: str, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The label tensors of a classifier task (a clip guide's target is its text embedding)."""
    return {"fashion": fashion_targets, "shapes": shapes_targets}[task](prompts)
