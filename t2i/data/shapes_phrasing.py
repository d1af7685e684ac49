"""`shapes` captions as people type them: synonyms, plurals and counts, sentence frames, word
orders, case and punctuation (`phrase_scene`), each with the Spec of what it states, so the exact
judge checks an image against the paraphrase itself.

Every choice is either a *word* (a name for a colour, shape, size, cell, relation or background)
or a *frame* (how the words are put together). Words are shared by training and evaluation: a
word-level text encoder cannot read a word it never saw, and `t2i generate` warns about those.
Frames are split: `train` phrasings never use a `heldout` frame, and the evaluation paraphrases
(`paraphrase_prompts`) always use held-out frames, so the paraphrase figure measures new
phrasings of known words, not memorised ones: new sentences around known phrases
("heldout_sentences"), or held-out frames at every level, word orders too ("heldout"). Every
word of a held-out frame also occurs in some training frame (tests/test_data_shapes_phrasing.py
checks both).

Scenes may repeat an object ("two red circles"): `sample_phrased_scene` draws a group of two or
three identical objects a quarter of the time; the canonical grammar never has them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from t2i.data.shapes import (
    CELL_PHRASES,
    GRID,
    Obj,
    ObjSpec,
    Scene,
    ShapesConfig,
    ShapesDataset,
    Spec,
    make_caption,
    parse_caption,
    pil_to_tensor,
    render_scene,
    sample_scene,
    scene_rng,
)
from t2i.data.typed import typed_case

# "heldout": held-out frames at every level (sentence, background, count, object, place,
# relation); "heldout_sentences": held-out sentence, background and count frames around the
# training object, place and relation frames (new sentences of known phrases)
PHRASE_SPLITS = ("train", "heldout", "heldout_sentences")

COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "emerald"),
    "blue": ("blue", "cobalt"),
    "yellow": ("yellow", "gold"),
    "purple": ("purple", "violet"),
    "orange": ("orange", "tangerine"),
}
BACKGROUND_WORDS = {"white": ("white",), "black": ("black",), "grey": ("grey", "gray")}
# (singular, plural)
SHAPE_WORDS = {
    "circle": (("circle", "circles"), ("disc", "discs"), ("disk", "disks")),
    "square": (("square", "squares"), ("block", "blocks")),
    "triangle": (("triangle", "triangles"),),
    "star": (("star", "stars"), ("five-pointed star", "five-pointed stars")),
    "heart": (("heart", "hearts"),),
}
SIZE_WORDS = {"large": ("large", "big", "huge"), "small": ("small", "tiny", "little")}
CELL_WORDS = {
    (0, 0): ("top left", "upper left", "top-left", "top left corner", "upper left corner"),
    (0, 1): ("top", "top middle", "top centre", "top center", "upper middle"),
    (0, 2): ("top right", "upper right", "top-right", "top right corner", "upper right corner"),
    (1, 0): ("left", "middle left", "centre left", "left side", "center left"),
    (1, 1): ("centre", "center", "middle"),
    (1, 2): ("right", "middle right", "centre right", "right side", "center right"),
    (2, 0): ("bottom left", "lower left", "bottom-left", "bottom left corner", "lower left corner"),
    (2, 1): ("bottom", "bottom middle", "bottom centre", "bottom center", "lower middle"),
    (2, 2): (
        "bottom right",
        "lower right",
        "bottom-right",
        "bottom right corner",
        "lower right corner",
    ),
}
RELATION_WORDS = {
    "to the left of": ("to the left of", "left of", "on the left of"),
    "to the right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "on top of", "over"),
    "below": ("below", "under", "beneath", "underneath"),
}
COUNT_WORDS = {2: ("two", "2", "a pair of"), 3: ("three", "3")}
TOTAL_WORDS = {1: ("one", "1"), 2: ("two", "2"), 3: ("three", "3")}

# Frames ({} is the body): "train" and "heldout" are disjoint; a held-out frame's words occur
# in training frames.
SENTENCE_FRAMES = {
    "train": (
        "{}",
        "{}",
        "a picture of {}",
        "draw {}",
        "please draw {}",
        "an image with {}",
        "there is {}",
        "show me {}",
        "i want to see {}",
        "can you make {}",
        "a simple drawing of {}",
    ),
    "heldout": (
        "a drawing of {}",
        "make me a picture with {}",
        "can you draw {}",
        "show {}, please",
        "an image of {}",
        "i want {}",
    ),
}
BACKGROUND_FRAMES = {
    "train": ("{} on a {bg} background", "{} on {bg}", "{} against a {bg} background"),
    "heldout": ("{} with a {bg} background", "{bg} background, {}", "{}, the background is {bg}"),
}
# How an object names its words: {d} determiner, {s} size, {c} colour, {n} shape noun.
OBJECT_FRAMES = {
    "train": ("{d} {s} {c} {n}", "{d} {c} {n} that is {s}", "{d} {s} {n} in {c}"),
    "heldout": ("{d} {s} {n} that is {c}", "{d} {c} {n}, {s}"),
}
OBJECT_FRAMES_NO_SIZE = {"train": ("{d} {c} {n}",), "heldout": ("{d} {n} in {c}",)}
# An object with its cell: {o} the object, {p} the cell's words.
PLACE_FRAMES = {
    "train": ("{o} in the {p}", "{o} at the {p}", "in the {p}, {o}", "{o} on the {p}"),
    "heldout": ("{o}, in the {p}", "{o} at the {p} of the image", "{o} in the {p} of the picture"),
}
# Two objects in relation: {a} and {b} objects, {r} the relation's words.
RELATION_FRAMES = {
    "train": ("{a} {r} {b}", "{a} is {r} {b}", "{a} sits {r} {b}"),
    "heldout": ("{a} that is {r} {b}", "{a}, {r} {b}", "{a} that sits {r} {b}"),
}
COUNT_FRAMES = {
    "train": ("{t} shapes: {}", "{}, {t} objects in total"),
    "heldout": ("{t} objects: {}", "{t} shapes, {}"),
}
SHARE_GRAMMAR = 0.25  # training captions in the canonical grammar: its skills stay trained
SHARE_GROUPS = 0.25  # scenes with a group of identical objects


@dataclass(frozen=True)
class Phrased:
    text: str
    spec: Spec  # what the text states, for the judge
    scene: Scene  # the scene it was phrased from: one image that satisfies it


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def check_split(split: str) -> str:
    if split not in PHRASE_SPLITS:
        raise ValueError(f"unknown phrasing split {split!r}; choose from {list(PHRASE_SPLITS)}")
    return split


# ----------------------------------------------------------------------------- scenes


def sample_phrased_scene(rng: np.random.Generator, config: ShapesConfig, split: str) -> Scene:
    """A scene of the `shapes` world; a quarter of them hold two or three identical objects."""
    if config.max_objects < 2 or rng.random() >= SHARE_GROUPS:
        return sample_scene(rng, config, split)
    base = sample_scene(rng, config, split)
    first = base.objects[0]
    k = int(rng.integers(2, min(3, config.max_objects) + 1))
    cells = rng.choice(GRID * GRID, size=k, replace=False)
    objs = tuple(
        Obj(first.shape, first.colour, first.size, (int(c) // GRID, int(c) % GRID)) for c in cells
    )
    return Scene(base.background, objs)


def groups(scene: Scene) -> list[list[Obj]]:
    """Objects of one colour, shape and size together, in order of first appearance."""
    out: dict[tuple, list[Obj]] = {}
    for o in scene.objects:
        out.setdefault((o.colour, o.shape, o.size), []).append(o)
    return list(out.values())


# ----------------------------------------------------------------------------- phrases


def _object(rng, o: Obj, split: str, with_size: bool, det: str = "a", plural: int = 0) -> str:
    noun = _pick(rng, SHAPE_WORDS[o.shape])[1 if plural else 0]
    colour = _pick(rng, COLOUR_WORDS[o.colour])
    size = _pick(rng, SIZE_WORDS[o.size])
    frames = OBJECT_FRAMES if with_size else OBJECT_FRAMES_NO_SIZE
    if plural:  # "two small red circles": counts take the plain order
        words = ([size] if with_size else []) + [colour, noun]
        return " ".join([_pick(rng, COUNT_WORDS[plural]), *words])
    text = _pick(rng, frames[split]).format(d=det, s=size, c=colour, n=noun)
    if det == "a":  # the article of the word that follows it
        first = text.split()[1]
        text = ("an" if first[0] in "aeiou" else "a") + text[1:]
    return text


def kind_of(spec: Spec) -> str:
    """'repeated object' ("two red circles"), 'relation' or 'list or places'."""
    pairs = [(o.colour, o.shape) for o in spec.objects]
    if len(set(pairs)) < len(pairs):
        return "repeated object"
    return "relation" if spec.relations else "list or places"


def _relation_of(rng, a: Obj, b: Obj) -> str | None:
    true = [
        rel
        for rel, holds in (
            ("to the left of", a.cell[1] < b.cell[1]),
            ("to the right of", a.cell[1] > b.cell[1]),
            ("above", a.cell[0] < b.cell[0]),
            ("below", a.cell[0] > b.cell[0]),
        )
        if holds
    ]
    return _pick(rng, true) if true else None


def _body(rng, scene: Scene, split: str, spec: Spec) -> str:
    """The objects of the scene in one of three styles; fills spec.objects / relations."""
    gs = groups(scene)
    with_size = bool(rng.random() < 0.7)
    styles = ["list", "absolute"] + (["relative"] if len(gs) == len(scene.objects) >= 2 else [])
    style = _pick(rng, styles)
    if style == "relative":
        a, b = scene.objects[0], scene.objects[1]
        rel = _relation_of(rng, a, b)
        words = _pick(rng, RELATION_WORDS[rel])
        frame = _pick(rng, RELATION_FRAMES[split])
        det = "the" if " is " in frame and rng.random() < 0.5 else "a"  # "the red circle is above"
        text = frame.format(
            a=_object(rng, a, split, with_size, det),
            r=words,
            b=_object(rng, b, split, with_size, det),
        )
        spec.objects += [_spec(a, with_size, False), _spec(b, with_size, False)]
        spec.relations.append((0, rel, 1))
        if len(scene.objects) == 3:
            c = scene.objects[2]
            place = _pick(rng, PLACE_FRAMES[split])
            text += " and " + place.format(o=_object(rng, c, split, with_size), p=_cell(rng, c))
            spec.objects.append(_spec(c, with_size, True))
        return text
    parts = []
    for g in gs:
        o = g[0]
        if len(g) > 1:
            parts.append(_object(rng, o, split, with_size, plural=len(g)))
            spec.objects += [_spec(x, with_size, False) for x in g]
        elif style == "absolute":
            place = _pick(rng, PLACE_FRAMES[split])
            parts.append(place.format(o=_object(rng, o, split, with_size), p=_cell(rng, o)))
            spec.objects.append(_spec(o, with_size, True))
        else:
            parts.append(_object(rng, o, split, with_size))
            spec.objects.append(_spec(o, with_size, False))
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text


def _cell(rng, o: Obj) -> str:
    return _pick(rng, CELL_WORDS[o.cell])


def _spec(o: Obj, with_size: bool, with_cell: bool) -> ObjSpec:
    return ObjSpec(o.shape, o.colour, o.size if with_size else None, o.cell if with_cell else None)


def _case_and_punctuation(rng, text: str) -> str:
    return typed_case(text, rng.random()) + _pick(rng, ("", "", ".", "!"))


def phrase_scene(scene: Scene, rng: np.random.Generator, split: str = "train") -> Phrased:
    """A caption of `scene` as a person might type it, in the frames of `split`, and its Spec."""
    check_split(split)
    spec = Spec()
    inner = "train" if split == "heldout_sentences" else split
    split = "heldout" if split.startswith("heldout") else split
    text = _body(rng, scene, inner, spec)
    spec.count = len(scene.objects)
    if rng.random() < 0.2:
        total = _pick(rng, TOTAL_WORDS[len(scene.objects)])
        frame = _pick(rng, COUNT_FRAMES[split])
        if len(scene.objects) == 1:
            frame = frame.replace("shapes", "shape").replace("objects", "object")
        text = frame.format(text, t=total)
    if rng.random() < 0.5:
        bg = _pick(rng, BACKGROUND_WORDS[scene.background])
        text = _pick(rng, BACKGROUND_FRAMES[split]).format(text, bg=bg)
        spec.background = scene.background
    text = _pick(rng, SENTENCE_FRAMES[split]).format(text)
    return Phrased(_case_and_punctuation(rng, text), spec, scene)


def training_caption(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """(caption, the same facts in the canonical grammar): the canonical grammar itself a quarter
    of the time (scenes without a repeated object), else a training phrasing."""
    if len(groups(scene)) == len(scene.objects) and rng.random() < SHARE_GRAMMAR:
        text = make_caption(scene, rng)
        return text, text
    phrased = phrase_scene(scene, rng, "train")
    return phrased.text, spec_caption(phrased.spec)


def spec_caption(spec: Spec) -> str:
    """The facts of `spec` in the canonical grammar (parse_caption reads them back): each object
    with its size and cell when stated, a relation between the first two, the background. A
    repeated object is named twice ("a red circle and a red circle")."""
    phrases = []
    for o in spec.objects:
        words = ([o.size] if o.size else []) + [o.colour, o.shape]
        text = ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
        phrases.append(text + (f" {CELL_PHRASES[o.cell]}" if o.cell else ""))
    for a, rel, b in spec.relations:  # at most one, between objects 0 and 1 (phrase_scene)
        phrases[a : b + 1] = [f"{phrases[a]} {rel} {phrases[b]}"]
    text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return text + (f" on a {spec.background} background" if spec.background else "")


# ----------------------------------------------------------------------------- evaluation


def paraphrase_prompts(
    n: int = 300, seed: int = 4321, split: str = "test", phrasing: str = "heldout_sentences"
) -> list[Phrased]:
    """A fixed paraphrase set: scenes of `split` ("test": training pairs, "holdout": held-out
    pairs), phrased in held-out frames (`phrasing`: "heldout_sentences" or "heldout")."""
    if phrasing == "train":
        raise ValueError(
            "evaluation paraphrases use held-out frames: 'heldout' or 'heldout_sentences'"
        )
    config = ShapesConfig(seed=seed)
    out = []
    for i in range(n):
        rng = scene_rng(seed, split, i)
        out.append(phrase_scene(sample_phrased_scene(rng, config, split), rng, phrasing))
    return out


def in_grammar(text: str) -> bool:
    """Whether the canonical parser reads `text` (paraphrases should mostly not be)."""
    try:
        parse_caption(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- training data


class VariedShapesDataset(ShapesDataset):
    """`--data shapes:varied`: the `shapes` world with scenes that may repeat an object and
    captions as people type them (`training_caption`); each item also holds "canonical", the
    same facts in the canonical grammar (what `t2i train phrasing` distils from)."""

    def captions(self, index: int) -> tuple[Scene, str, str]:
        rng = scene_rng(self.config.seed, self.split, index)
        scene = sample_phrased_scene(rng, self.config, self.split)
        return (scene, *training_caption(scene, rng))

    def canonical_caption(self, index: int) -> str:
        """Item `index`'s canonical caption, without drawing its image."""
        return self.captions(index)[2]

    def item(self, index: int) -> dict:
        scene, caption, canonical = self.captions(index)
        image = pil_to_tensor(render_scene(scene, self.config.image_size))
        return {"image": image, "caption": caption, "canonical": canonical, "scene": scene}
