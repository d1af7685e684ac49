"""`shapes`: procedural scenes of flat-coloured shapes on a 3x3 grid, with captions from a grammar.

Item i of a split is always the same scene (its RNG is seeded from (seed, split, i)), so training
can resume at a data position and the judge (`t2i.data.judge`) can check an image against its scene.
The world is kept small on purpose: 5 shapes, 6 colours far apart in RGB, 2 clearly separated sizes,
one object per grid cell, 3 backgrounds; a held-out split keeps chosen colour-shape pairs out of
training to test compositional generalisation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset, IterableDataset

SHAPES = ("circle", "square", "triangle", "star", "heart")
# Flat colours at least ~95 apart in RGB from each other and from the backgrounds.
COLOURS = {
    "red": (215, 30, 40),
    "green": (30, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (245, 225, 30),
    "purple": (140, 50, 200),
    "orange": (245, 130, 20),
}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128)}
# Concepts the renderer and the judge know but the training data never holds (sample_scene draws
# from COLOURS and SHAPES only): what adapters are measured on (t2i/data/shapes_concepts.py).
# At least ~95 apart in RGB from every colour and background, as those are from each other.
NOVEL_COLOURS = {"teal": (0, 150, 150), "pink": (255, 120, 200)}
NOVEL_SHAPES = ("diamond",)
ALL_COLOURS = {**COLOURS, **NOVEL_COLOURS}
ALL_SHAPES = SHAPES + NOVEL_SHAPES
SIZES = {"small": 0.3, "large": 0.46}  # half-extent R of the shape, in grid-cell units
GRID = 3
CELL_PHRASES = {
    (0, 0): "in the top left",
    (0, 1): "at the top",
    (0, 2): "in the top right",
    (1, 0): "on the left",
    (1, 1): "in the centre",
    (1, 2): "on the right",
    (2, 0): "in the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "in the bottom right",
}
RELATIONS = ("to the left of", "to the right of", "above", "below")
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
SPLITS = {"train": 0, "holdout": 1, "test": 2, "all": 3}
SUPERSAMPLE = 4  # draw at 4x and box-filter down: anti-aliased edges, flat interiors


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    cell: tuple[int, int]  # (row, col) on the 3x3 grid, row 0 at the top


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...]


@dataclass
class ShapesConfig:
    image_size: int = 64  # the judge is exact from 48 px up
    max_objects: int = 3  # min_objects..max_objects objects per scene, each in its own cell
    min_objects: int = 1
    holdout: tuple[tuple[str, str], ...] = (("green", "star"), ("blue", "heart"))  # (colour, shape)
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    seed: int = 0

    @staticmethod
    def preset(name: str) -> ShapesConfig:
        presets = {
            "default": ShapesConfig(),
            "single": ShapesConfig(max_objects=1),  # one object: the easiest task
            "white": ShapesConfig(backgrounds=("white",)),
            # two or three objects: a fine-tune's mix for the scenes the default world draws worst
            "crowded": ShapesConfig(min_objects=2),
            "three": ShapesConfig(min_objects=3),  # three objects only: the weakest scenes
        }
        if name not in presets:
            choices = sorted([*presets, "varied"])  # varied: captions of shapes_phrasing.py
            raise ValueError(f"unknown shapes preset {name!r}; choose from {choices}")
        return presets[name]

    def __post_init__(self) -> None:
        if not 1 <= self.max_objects <= GRID * GRID:
            raise ValueError(f"max_objects={self.max_objects}; choose from 1..{GRID * GRID}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"min_objects={self.min_objects}; choose from 1..max_objects ({self.max_objects})"
            )
        for colour, shape in self.holdout:
            if colour not in COLOURS or shape not in SHAPES:
                raise ValueError(
                    f"holdout pair {(colour, shape)!r}: colours {list(COLOURS)}, shapes {SHAPES}"
                )
        if len(COLOURS) * len(SHAPES) - len(set(self.holdout)) < self.max_objects:
            raise ValueError(f"holdout {self.holdout} leaves fewer pairs than max_objects")
        for bg in self.backgrounds:
            if bg not in BACKGROUNDS:
                raise ValueError(f"unknown background {bg!r}; choose from {list(BACKGROUNDS)}")


# ----------------------------------------------------------------------------- scenes


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG of item `index`: a pure function of (seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; choose from {list(SPLITS)}")
    return np.random.default_rng([seed, SPLITS[split], index])


def sample_scene(rng: np.random.Generator, config: ShapesConfig, split: str = "train") -> Scene:
    """One scene; `train`/`test` never hold a held-out pair, `holdout` always holds one."""
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    held = set(config.holdout)
    used: set[tuple[str, str]] = set()
    objects = []
    for k, c in enumerate(cells):
        while True:
            pair = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
            if split == "holdout" and k == 0 and held:
                pair = tuple(config.holdout[int(rng.integers(len(config.holdout)))])
            if pair in used or (split in ("train", "test") and pair in held):
                continue
            break
        used.add(pair)
        size = str(rng.choice(list(SIZES)))
        objects.append(Obj(pair[1], pair[0], size, (int(c) // GRID, int(c) % GRID)))
    background = str(rng.choice(config.backgrounds))
    return Scene(background, tuple(objects))


# ----------------------------------------------------------------------------- rendering


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of `shape` filling the box [cx-r, cx+r] x [cy-r, cy+r] (None for the circle)."""
    if shape == "circle":
        return None
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":  # a square on its corner, filling its box
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "star":  # 5 points, inner radius 0.45 keeps the arms thick enough at 64 px
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        return _fit_box(pts, cx, cy, r)
    if shape == "heart":  # the classic parametric heart, scaled to the box
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return _fit_box(list(zip(x.tolist(), y.tolist())), cx, cy, r)
    raise ValueError(f"unknown shape {shape!r}; choose from {ALL_SHAPES}")


def _fit_box(pts: list[tuple[float, float]], cx: float, cy: float, r: float) -> list:
    """Scale `pts` uniformly so the larger side of their bbox is 2r, centred on (cx, cy)."""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    mx, my = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    s = 2 * r / max(max(xs) - min(xs), max(ys) - min(ys))
    return [(cx + (x - mx) * s, cy + (y - my) * s) for x, y in pts]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    poly = shape_polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def render_scene(scene: Scene, image_size: int = 64) -> Image.Image:
    """RGB image of `scene`: flat colours, anti-aliased edges (drawn 4x larger, box-filtered)."""
    big = image_size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    cell = big / GRID
    for o in scene.objects:
        cx, cy = (o.cell[1] + 0.5) * cell, (o.cell[0] + 0.5) * cell
        draw_shape(draw, o.shape, cx, cy, SIZES[o.size] * cell, ALL_COLOURS[o.colour])
    return img.resize((image_size, image_size), Image.BOX)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> FloatTensor (C, H, W) in [-1, 1]."""
    a = np.asarray(img, dtype=np.float32)
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(a.transpose(2, 0, 1) / 127.5 - 1.0)


# ----------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun(o: Obj, with_size: bool, det: str = "a") -> str:
    words = ([o.size] if with_size else []) + [o.colour, o.shape]
    det = _article(words[0]) if det == "a" else det
    return " ".join([det, *words])


def _relation(a: Obj, b: Obj, rng: np.random.Generator) -> str:
    """A relation that holds from a to b on the grid (a and b are in different cells)."""
    true = []
    if a.cell[1] < b.cell[1]:
        true.append("to the left of")
    if a.cell[1] > b.cell[1]:
        true.append("to the right of")
    if a.cell[0] < b.cell[0]:
        true.append("above")
    if a.cell[0] > b.cell[0]:
        true.append("below")
    return true[int(rng.integers(len(true)))]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def make_caption(scene: Scene, rng: np.random.Generator, style: str | None = None) -> str:
    """A caption of `scene` in one of several phrasings: 'absolute', 'relative' or 'list'.

    Each phrasing states colour and shape of every object; sizes, cells, relations, the count and
    the background are stated in some phrasings only. The judge checks what a caption states.
    """
    objs = scene.objects
    styles = ["absolute", "list"] + (["relative"] if len(objs) >= 2 else [])
    style = style or styles[int(rng.integers(len(styles)))]
    with_size = bool(rng.random() < 0.7)
    if style == "absolute":
        text = _join([f"{_noun(o, with_size)} {CELL_PHRASES[o.cell]}" for o in objs])
    elif style == "list":
        text = _join([_noun(o, with_size) for o in objs])
        if rng.random() < 0.5:
            text = f"{NUMBER_WORDS[len(objs)]} shape{'s' if len(objs) > 1 else ''}: {text}"
    elif style == "relative":
        a, b = objs[0], objs[1]
        text = f"{_noun(a, with_size)} {_relation(a, b, rng)} {_noun(b, with_size)}"
        if len(objs) == 3:
            c, ref = objs[2], objs[int(rng.integers(2))]
            rel = _relation(c, ref, rng)
            text += f", and {_noun(c, with_size)} {rel} {_noun(ref, False, 'the')}"
    else:
        raise ValueError(f"unknown caption style {style!r}; choose from {styles}")
    if rng.random() < 0.5:
        text += f" on a {scene.background} background"
    return text


# ----------------------------------------------------------------------------- facts


@dataclass
class ObjSpec:
    shape: str
    colour: str
    size: str | None = None  # None: not stated
    cell: tuple[int, int] | None = None


@dataclass
class Spec:
    """What a caption (or a scene) requires of an image."""

    objects: list[ObjSpec] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)  # (subject, rel, object)
    background: str | None = None
    count: int | None = None


def scene_spec(scene: Scene) -> Spec:
    """Every fact of a scene: count, each object's shape, colour, size and cell, the background."""
    objs = [ObjSpec(o.shape, o.colour, o.size, o.cell) for o in scene.objects]
    return Spec(objs, [], scene.background, len(objs))


_COL = "|".join(ALL_COLOURS)
_OBJ_RE = re.compile(
    rf"\b(an?|the) (?:(small|large) )?({_COL}) ({'|'.join(ALL_SHAPES)})\b", flags=re.IGNORECASE
)
_CELL_RE = {cell: re.compile(rf"^ {p}\b") for cell, p in CELL_PHRASES.items()}
_BG_RE = re.compile(rf" on an? ({'|'.join(BACKGROUNDS)}) background\b")
_COUNT_RE = re.compile(rf"^({'|'.join(NUMBER_WORDS[1:])}) (?:shapes?|objects?):")


def parse_caption(caption: str) -> Spec:
    """Caption of the `shapes` grammar -> Spec; raises ValueError on words outside the grammar."""
    text = caption.strip().lower().rstrip(".")
    spec, rest = Spec(), text
    if m := _BG_RE.search(text):
        spec.background, rest = m.group(1), rest.replace(m.group(0), " ")
    if m := _COUNT_RE.match(rest):
        spec.count, rest = NUMBER_WORDS.index(m.group(1)), rest[m.end() :]
    matches = list(_OBJ_RE.finditer(rest))
    leftovers, prev_end, prev_idx = [], 0, None
    for m in matches:
        gap = rest[prev_end : m.start()]
        det, size, colour, shape = m.groups()
        idx = _object_index(spec, det, size, colour, shape, caption)
        rel = gap.strip(" ,").removeprefix("and ").strip()
        if rel in RELATIONS and prev_idx is not None:
            spec.relations.append((prev_idx, rel, idx))
        else:
            leftovers.append(gap)
        prev_end, prev_idx = m.end(), idx
        for cell, cell_re in _CELL_RE.items():
            if c := cell_re.match(rest[prev_end:]):
                spec.objects[idx].cell, prev_end = cell, prev_end + c.end()
                break
    leftovers.append(rest[prev_end:])
    junk = " ".join(re.sub(r"\band\b|[,:]", " ", g) for g in leftovers).split()
    if junk or not spec.objects:
        raise ValueError(f"caption outside the shapes grammar: {caption!r} (unparsed: {junk})")
    if spec.count is None:
        spec.count = len(spec.objects)
    return spec


def _object_index(spec: Spec, det: str, size, colour: str, shape: str, caption: str) -> int:
    """Index of a new object ('a ...') or of the object that 'the ...' refers to."""
    if det == "the":
        for k, o in enumerate(spec.objects):
            if (o.colour, o.shape) == (colour, shape):
                return k
        raise ValueError(f"'the {colour} {shape}' refers to no object in {caption!r}")
    spec.objects.append(ObjSpec(shape, colour, size))
    return len(spec.objects) - 1


# ----------------------------------------------------------------------------- datasets


def shapes_item(config: ShapesConfig, split: str, index: int) -> dict:
    rng = scene_rng(config.seed, split, index)
    scene = sample_scene(rng, config, split)
    img = render_scene(scene, config.image_size)
    return {"image": pil_to_tensor(img), "caption": make_caption(scene, rng), "scene": scene}


class ShapesDataset(Dataset):
    """A fixed number of `shapes` items; item i is a pure function of (config.seed, split, i)."""

    def __init__(
        self, config: ShapesConfig | None = None, length: int = 100_000, split: str = "train"
    ):
        self.config = config or ShapesConfig()
        scene_rng(0, split, 0)  # validates the split name
        self.length, self.split = length, split

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return {**self.item(index), "index": index}

    def item(self, index: int) -> dict:
        """Item `index` without its index (a subclass words captions its own way)."""
        return shapes_item(self.config, self.split, index)


class ShapesStream(IterableDataset):
    """Endless `shapes` items from `start`; ranks x DataLoader workers take interleaved indices."""

    def __init__(self, config: ShapesConfig | None = None, split: str = "train", start: int = 0):
        self.config, self.split, self.start = config or ShapesConfig(), split, start
        scene_rng(0, split, 0)

    def __iter__(self):
        from t2i.data.shards import worker_slot

        slot, slots = worker_slot()
        i = self.start + slot
        while True:
            yield {**shapes_item(self.config, self.split, i), "index": i}
            i += slots


def shapes_eval_prompts(n: int = 200, seed: int = 1234, split: str = "test") -> list[str]:
    """A fixed, parseable prompt set for evaluation (the `holdout` split: held-out pairs only)."""
    config = ShapesConfig(seed=seed)
    prompts = []
    for i in range(n):
        rng = scene_rng(seed, split, i)
        prompts.append(make_caption(sample_scene(rng, config, split), rng))
    return prompts


def heldout_prompts(n: int = 100, seed: int = 1234) -> list[str]:
    """Prompts that each contain a colour-shape pair kept out of the `train` split."""
    return shapes_eval_prompts(n, seed, split="holdout")


def recolour(scene: Scene, mapping: dict[str, str]) -> Scene:
    """The scene with colours swapped by `mapping` (used to test the judge)."""
    objs = tuple(replace(o, colour=mapping.get(o.colour, o.colour)) for o in scene.objects)
    return replace(scene, objects=objs)
