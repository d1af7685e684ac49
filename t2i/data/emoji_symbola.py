"""A new emoji art style the bundled `emoji` model never saw: the monochrome glyphs of the Symbola
font (Debian `fonts-symbola`, which the emoji data set does not use), as a user would bring a
style to an adapter: a plain folder of captioned images (`write_style_folder`), and prompts about
other emoji in that style to measure what the adapter learnt (`style_prompts`), judged by the
style classifier of t2i/evaluation/emoji_style.py.

Captions follow the emoji data set's: "fox emoji, symbola style". Subjects are the emoji with one
code point that the catalogue names and the font draws (no flags, keycaps or sequences). The
folder's subjects and the prompts' subjects are disjoint, drawn from two seed streams; the style
classifier holds out every subject whose key hashes into `heldout_subject`.
"""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache
from pathlib import Path

import numpy as np

FONT_PATH = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
STYLE = "symbola"
RENDER_PX = 96  # glyphs drawn at this size, then cropped and fitted to the image side
MARGIN = 0.08  # share of the side left around the glyph, about as the other styles leave
FOLDER_SEED, PROMPT_SEED = 0, 1
GROUPS = {  # emoji of things: no symbols, flags, letters or marks
    "smileys & emotion",
    "people & body",
    "animals & nature",
    "food & drink",
    "travel & places",
    "activities",
    "objects",
}
MAX_COUNT = 2000


def font_path() -> Path:
    if not FONT_PATH.is_file():
        raise FileNotFoundError(
            f"the Symbola font is not at {FONT_PATH}: apt-get install fonts-symbola "
            "(bash scripts/setup.sh --dev does)"
        )
    return FONT_PATH


@lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path()), RENDER_PX)


@lru_cache(maxsize=1)
def _missing_glyph() -> bytes:
    """What the font draws for a code point it lacks (plane 15, private use: never in Symbola)."""
    return bytes(_font().getmask("\U000f0000"))


def render(text: str, size: int = 64):
    """The glyph of `text` black on white, centred, size x size RGB; None when the font lacks it."""
    from PIL import Image, ImageDraw

    font = _font()
    mask = font.getmask(text)
    if mask.size[0] == 0 or bytes(mask) == _missing_glyph():
        return None
    canvas = Image.new("L", (2 * RENDER_PX, 2 * RENDER_PX), 0)
    ImageDraw.Draw(canvas).text((RENDER_PX, RENDER_PX), text, font=font, fill=255, anchor="mm")
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    side = round(max(glyph.size) / (1 - 2 * MARGIN))
    square = Image.new("L", (side, side), 0)
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    ink = square.resize((size, size), Image.Resampling.LANCZOS)
    return Image.merge("RGB", [ink.point(lambda v: 255 - v)] * 3)


@lru_cache(maxsize=2)
def subjects(sources: str | None = None) -> tuple[tuple[str, str], ...]:
    """(key, name) of every emoji of a thing (GROUPS) with one code point that the catalogue
    names and Symbola draws, sorted by key."""
    from t2i.data import emoji_sources as es

    root = es.sources_dir(sources)
    catalogue = es.load_catalogue(root)
    out = []
    for key, info in sorted(catalogue.items()):
        plain = "-" not in key and ":" not in info.name and info.name.isascii()
        if not plain or info.group not in GROUPS:
            continue
        if render(es.text_of_key(key), 16) is not None:
            out.append((key, info.name))
    if not out:
        raise FileNotFoundError(
            f"no emoji catalogue in {root}: install the emoji sources "
            "(bash scripts/setup.sh --dev) or set T2I_EMOJI_SOURCES"
        )
    return tuple(out)


def caption(name: str) -> str:
    return f"{name} emoji, {STYLE} style"


def heldout_subject(key: str) -> bool:
    """One subject in five, by a hash of its key: never seen by the style classifier."""
    return hashlib.sha256(key.encode()).digest()[0] % 5 == 0


def _check_count(count: int, limit: int) -> int:
    if not isinstance(count, int) or not 1 <= count <= limit:
        raise ValueError(f"count must be an integer in [1, {limit}], got {count!r}")
    return count


def _split(seed: int, sources: str | None) -> tuple[list, list]:
    """The subjects shuffled by `seed`, cut in two: the folder's half and the prompts' half."""
    pool = list(subjects(sources))
    random.Random(seed).shuffle(pool)
    half = len(pool) // 2
    return pool[:half], pool[half:]


def write_style_folder(
    out: str | Path, count: int = 50, seed: int = FOLDER_SEED, size: int = 64, sources=None
) -> Path:
    """`count` Symbola emoji as a user's folder: <key>.png + <key>.txt (the caption)."""
    folder_half, _ = _split(seed, sources)
    _check_count(count, min(MAX_COUNT, len(folder_half)))
    if not 16 <= size <= 512:
        raise ValueError(f"size must be in [16, 512], got {size}")
    from t2i.data import emoji_sources as es

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for key, name in folder_half[:count]:
        render(es.text_of_key(key), size).save(out / f"{key}.png")
        (out / f"{key}.txt").write_text(caption(name) + "\n")
    return out


def folder_subjects(count: int = 50, seed: int = FOLDER_SEED, sources=None) -> list[str]:
    folder_half, _ = _split(seed, sources)
    return [key for key, _ in folder_half[:count]]


def style_prompts(count: int = 100, seed: int = PROMPT_SEED, folder_seed: int = FOLDER_SEED):
    """`count` prompts about emoji outside the folder's half, in the Symbola style."""
    _, prompt_half = _split(folder_seed, None)
    _check_count(count, len(prompt_half))
    rng = random.Random(seed)
    return [caption(name) for _, name in rng.sample(prompt_half, count)]


def symbola_images(heldout: bool, size: int = 64, sources=None) -> tuple[np.ndarray, list[str]]:
    """(uint8 (N, size, size, 3), keys) of every subject in the classifier's held-out part
    (heldout=True) or its training part."""
    from t2i.data import emoji_sources as es

    keys = [k for k, _ in subjects(sources) if heldout_subject(k) == heldout]
    images = [np.asarray(render(es.text_of_key(k), size)) for k in keys]
    return np.stack(images), keys
