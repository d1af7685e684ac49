"""New concepts for `shapes` that its training data never holds (shapes.NOVEL_COLOURS,
NOVEL_SHAPES: teal, pink, diamond), as a user would bring them to an adapter: a plain folder of
captioned images (`write_concept_folder`), and prompts that use the concept to measure what the
adapter learnt (`concept_prompts`; `pair_prompts`: two concepts on two objects of one image),
judged exactly by t2i.data.judge and t2i.data.cell_judge.

A concept's images put it on one object of a scene of one or two (the other from the training
world), captioned in the shapes grammar ("a small teal square in the top left"). Evaluation
prompts come from another seed stream than the folder's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2i.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    GRID,
    NOVEL_COLOURS,
    NOVEL_SHAPES,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    make_caption,
    render_scene,
)

CONCEPTS = tuple(NOVEL_COLOURS) + NOVEL_SHAPES
FOLDER_SEED, PROMPT_SEED = 0, 1


def check_concept(concept: str) -> str:
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; choose from {list(CONCEPTS)}")
    return concept


def concept_object(rng: np.random.Generator, concept: str, cell: tuple[int, int]) -> Obj:
    """One object that shows `concept`: its colour with a training shape, or its shape with a
    training colour."""
    if concept in NOVEL_COLOURS:
        colour, shape = concept, str(rng.choice(SHAPES))
    else:
        colour, shape = str(rng.choice(list(COLOURS))), concept
    return Obj(shape, colour, str(rng.choice(list(SIZES))), cell)


def concept_scene(
    rng: np.random.Generator, concepts: tuple[str, ...], extra: bool, together: bool = True
) -> Scene:
    """A scene with one object per concept (one object showing all of them when they are a
    colour and a shape and `together`), plus one object of the training world when `extra`."""
    colours = [c for c in concepts if c in NOVEL_COLOURS]
    shapes = [c for c in concepts if c in NOVEL_SHAPES]
    cells = [(int(k) // GRID, int(k) % GRID) for k in rng.choice(GRID * GRID, 3, replace=False)]
    if colours and shapes and together:  # a teal diamond
        objects = [Obj(shapes[0], colours[0], str(rng.choice(list(SIZES))), cells[0])]
    else:
        objects = [concept_object(rng, c, cells[i]) for i, c in enumerate(concepts)]
    if extra:
        used = {(o.colour, o.shape) for o in objects}
        while (pair := (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))) in used:
            pass
        objects.append(Obj(pair[1], pair[0], str(rng.choice(list(SIZES))), cells[len(objects)]))
    return Scene(str(rng.choice(list(BACKGROUNDS))), tuple(objects))


def write_concept_folder(
    out: str | Path, concept: str, count: int = 50, seed: int = FOLDER_SEED, size: int = 64
) -> Path:
    """`count` captioned images of `concept` as name.png + name.txt (t2i/data/folder.py)."""
    check_concept(concept)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, CONCEPTS.index(concept)])
    for i in range(count):
        scene = concept_scene(rng, (concept,), extra=bool(rng.random() < 0.5))
        render_scene(scene, size).save(out / f"{concept}-{i:04d}.png")
        (out / f"{concept}-{i:04d}.txt").write_text(make_caption(scene, rng) + "\n")
    return out


def concept_prompts(concepts: tuple[str, ...] | str, n: int, seed: int = PROMPT_SEED) -> list[str]:
    """`n` prompts of single-object scenes that use the concept(s) (a colour and a shape: one
    object that is both), in the shapes grammar, with a cell or background stated at times."""
    concepts = (concepts,) if isinstance(concepts, str) else tuple(concepts)
    for c in concepts:
        check_concept(c)
    rng = np.random.default_rng([seed, *[CONCEPTS.index(c) for c in concepts]])
    prompts = []
    while len(prompts) < n:
        scene = concept_scene(rng, concepts, extra=False)
        prompts.append(make_caption(scene, rng, style="absolute" if rng.random() < 0.5 else "list"))
    return prompts


def pair_prompts(concepts: tuple[str, str], n: int, seed: int = PROMPT_SEED) -> list[str]:
    """`n` prompts of two objects, each showing one of the two concepts ("a pink circle to the
    left of a red diamond"), phrased absolutely, as a list or by a relation; a seed stream of its
    own (concept_prompts((a, b), ...) puts a colour and a shape on one object instead)."""
    if len(concepts) != 2 or len(set(concepts)) != 2:
        raise ValueError(f"pair_prompts takes two different concepts, got {concepts!r}")
    for c in concepts:
        check_concept(c)
    rng = np.random.default_rng([seed, len(CONCEPTS), *[CONCEPTS.index(c) for c in concepts]])
    return [
        make_caption(concept_scene(rng, tuple(concepts), extra=False, together=False), rng)
        for _ in range(n)
    ]
