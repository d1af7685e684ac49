"""The judge of a `shapes` layout: an image of GRID x GRID pixels, each the mean colour of one cell.

A cascade's first stage can draw the scene at the grid's own resolution (t2i/cascade.py): each
pixel then holds one cell's background, tinted by the object in it in proportion to the share of
the cell it covers. That is enough to read, per cell, whether it holds an object, its colour and
(given the shape the caption names for that colour) its size; shapes themselves are not visible.
So this judge checks the caption's count, colour, size, position and background facts, the
categories of t2i.data.judge without shape and colour-shape binding. Exact on the data's own
scenes shrunk to GRID x GRID (tested), the way the cascade's upscaler is trained to read them.
As t2i.data.judge does, it reads the novel colours (teal, pink) only when a caption names them, so
a caption of the training world is judged as before they existed; a cell has no "no colour"
reading, so a novel colour judged against a caption that names none is read as its nearest
training colour (as any colour off the palette always was).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from t2i.data.judge import Detection, Verdict, novel_in, palette, relation_facts, to_rgb_array
from t2i.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    GRID,
    SIZES,
    Obj,
    Scene,
    Spec,
    parse_caption,
    pil_to_tensor,
    render_scene,
    scene_spec,
)
from t2i.images import shrink

CELL_CATEGORIES = ("count", "colour", "size", "position", "background")
EMPTY_DIST = 12.0  # RGB distance from the background below which a cell holds no object
_RGB = np.array(list(COLOURS.values()), dtype=np.float64)


@functools.cache
def coverage(shape: str, size: str) -> float:
    """Share of its cell an object covers, as the shrunk 64 px render shows it (centre cell)."""
    scene = Scene("black", (Obj(shape, "yellow", size, (1, 1)),))
    small = shrink(pil_to_tensor(render_scene(scene, 64))[None], (GRID, GRID))[0]
    rgb = (small[:, 1, 1].numpy() + 1) * 127.5
    return float(rgb @ _RGB[3] / (_RGB[3] @ _RGB[3]))


def detect_cells(image, novel: tuple[str, ...] = ()) -> tuple[list[Detection], str]:
    """A GRID x GRID image -> one detection per non-empty cell (its colour, the share of the cell
    it covers as `iou`, shape "unknown"), and the background: the one nearest the median cell.
    `novel`: colours outside the training world to read too (as t2i.data.judge.detect)."""
    colours = palette(novel)[0]
    named = np.array(list(colours.values()), dtype=np.float64)
    rgb = to_rgb_array(image).astype(np.float64)
    if rgb.shape[:2] != (GRID, GRID):
        raise ValueError(
            f"the cell judge needs {GRID}x{GRID} images, got {rgb.shape[1]}x{rgb.shape[0]}"
        )
    bg = min(BACKGROUNDS, key=lambda b: np.median(np.linalg.norm(rgb - BACKGROUNDS[b], axis=-1)))
    b = np.array(BACKGROUNDS[bg], dtype=np.float64)
    v = named - b  # each named colour's direction from the background
    dets = []
    for row in range(GRID):
        for col in range(GRID):
            p = rgb[row, col] - b
            if np.linalg.norm(p) < EMPTY_DIST:
                continue
            alpha = np.clip(v @ p / (v * v).sum(-1), 0, 1)
            resid = np.linalg.norm(p - alpha[:, None] * v, axis=-1)
            k = int(resid.argmin())
            dets.append(Detection(list(colours)[k], "unknown", "", (row, col), 0, float(alpha[k])))
    return dets, bg


def size_of(shape: str, share: float) -> str:
    """The size whose coverage of a `shape` is nearest the share of the cell seen."""
    return min(SIZES, key=lambda s: abs(coverage(shape, s) - share))


def judge_cells(image, target: str | Scene | Spec) -> Verdict:
    """Check a GRID x GRID layout against a caption, Scene or Spec (the module's categories).

    Shapes are not visible, so two objects of one colour can be told apart only by their cells
    and sizes: the objects are matched to the cells of their colour in the way that makes the
    most facts hold (the layout is right if some reading of it is)."""
    spec = parse_caption(target) if isinstance(target, str) else target
    spec = scene_spec(spec) if isinstance(spec, Scene) else spec
    dets, bg = detect_cells(image, novel_in(spec))
    facts = []
    if spec.count is not None:
        facts.append(
            ("count", f"{spec.count} objects (found {len(dets)})", len(dets) == spec.count)
        )
    for o in spec.objects:
        need = sum(p.colour == o.colour for p in spec.objects)
        have = sum(d.colour == o.colour for d in dets)
        facts.append(("colour", f"a {o.colour} object", have >= need))
    options = [[d for d in dets if d.colour == o.colour] + [None] for o in spec.objects]
    readings = (m for m in itertools.product(*options) if _one_to_one(m))
    facts += max((_placement_facts(spec, m) for m in readings), key=_holding)
    if spec.background is not None:
        facts.append(("background", f"a {spec.background} background", bg == spec.background))
    return Verdict(facts, dets, bg)


def _one_to_one(match: tuple) -> bool:
    found = [id(d) for d in match if d is not None]
    return len(found) == len(set(found))


def _holding(facts: list) -> int:
    return sum(holds for _, _, holds in facts)


def _placement_facts(spec: Spec, match: tuple) -> list[tuple[str, str, bool]]:
    """Size and position facts with object i read as the detection match[i] (None: missing)."""
    facts = []
    for o, d in zip(spec.objects, match):
        if o.size is not None:
            holds = d is not None and size_of(o.shape, d.iou) == o.size
            facts.append(("size", f"the {o.colour} {o.shape} is {o.size}", holds))
        if o.cell is not None:
            holds = d is not None and d.cell == o.cell
            facts.append(("position", f"the {o.colour} {o.shape} in cell {o.cell}", holds))
    return facts + relation_facts(spec, [d.cell if d is not None else None for d in match])
