"""Open-licence emoji art sets: where each lives, its names, and a reader per style.

Every reader yields `(key, RGBA image)` at the requested size; the key of an emoji is its code
points in lower-case hex joined by '-', without the fe0f selector ("1f98a", "1f44b-1f3fd").
The sets come from Debian (Noto font, EmojiOne) and npm (Twemoji, Fluent, OpenMoji), installed by
`scripts/install-emoji-sources.sh` into `.emoji_sources/`; nothing is downloaded here.
"""

from __future__ import annotations

import io
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image

SKIN_TONES = {  # Fitzpatrick modifiers -> the words CLDR uses
    "1f3fb": "light skin tone",
    "1f3fc": "medium-light skin tone",
    "1f3fd": "medium skin tone",
    "1f3fe": "medium-dark skin tone",
    "1f3ff": "dark skin tone",
}
NOTO_FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
)
NOTO_PX = 109  # the only size the CBDT bitmap font renders at
INSTALL_HINT = "bash scripts/install-emoji-sources.sh"


@dataclass(frozen=True)
class EmojiStyle:
    name: str  # folder name and --styles value
    phrase: str  # caption words: "fox emoji, <phrase> style"
    licence: str  # SPDX id of the artwork's licence
    package: str  # where it comes from (npm or Debian package)
    install: str  # what to run when it is missing


STYLES: dict[str, EmojiStyle] = {
    s.name: s
    for s in (
        EmojiStyle(
            "noto",
            "noto",
            "OFL-1.1",
            "Debian fonts-noto-color-emoji",
            "apt-get install fonts-noto-color-emoji",
        ),
        EmojiStyle("twemoji", "twemoji", "CC-BY-4.0", "npm @iconify-json/twemoji", INSTALL_HINT),
        EmojiStyle(
            "fluent-flat", "flat", "MIT", "npm @iconify-json/fluent-emoji-flat", INSTALL_HINT
        ),
        EmojiStyle(
            "fluent-color", "fluent color", "MIT", "npm @iconify-json/fluent-emoji", INSTALL_HINT
        ),
        EmojiStyle("fluent-3d", "3d", "MIT", "npm @lobehub/fluent-emoji-3d", INSTALL_HINT),
        EmojiStyle("openmoji", "openmoji", "CC-BY-SA-4.0", "npm openmoji", INSTALL_HINT),
        EmojiStyle(
            "openmoji-outline", "black outline", "CC-BY-SA-4.0", "npm openmoji", INSTALL_HINT
        ),
        EmojiStyle("emojione", "emojione", "CC-BY-SA-4.0", "Debian ruby-gemojione", INSTALL_HINT),
    )
}

ICONIFY = {
    "twemoji": "twemoji",
    "fluent-flat": "fluent-emoji-flat",
    "fluent-color": "fluent-emoji",
}


def normalise_key(hexcode: str) -> str:
    """'1F44B-FE0F-1F3FD' or '1f44b_1f3fd' -> '1f44b-1f3fd'."""
    cps = [c.lstrip("0").rjust(4, "0") for c in re.split(r"[-_ ]", hexcode.strip().lower()) if c]
    cps = [c for c in cps if c != "fe0f"]
    if cps[-1].startswith("e00") and cps[-1] != "e007f":  # tag flags: some files drop CANCEL TAG
        cps.append("e007f")
    return "-".join(cps)


def key_of_text(text: str) -> str:
    return normalise_key("-".join(f"{ord(ch):x}" for ch in text))


def text_of_key(key: str) -> str:
    return "".join(chr(int(c, 16)) for c in key.split("-"))


def base_key(key: str) -> str:
    """The key without skin-tone modifiers: all tone variants of an emoji share it."""
    cps = key.split("-")
    if len(cps) == 1:
        return key
    return "-".join(c for c in cps if c not in SKIN_TONES)


def tones_of_key(key: str) -> tuple[str, ...]:
    cps = key.split("-")
    if len(cps) == 1:  # a bare modifier is an emoji of its own ("light skin tone")
        return ()
    return tuple(dict.fromkeys(SKIN_TONES[c] for c in cps if c in SKIN_TONES))


# ----------------------------------------------------------------------------- where the sets live


def sources_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder the install script fills: `path`, $T2I_EMOJI_SOURCES, ./.emoji_sources or the
    repository's .emoji_sources, whichever exists first (the last one when none does)."""
    if path is not None:
        return Path(path)
    if os.environ.get("T2I_EMOJI_SOURCES"):
        return Path(os.environ["T2I_EMOJI_SOURCES"])
    repo = Path(__file__).resolve().parents[2]
    candidates = [Path.cwd() / ".emoji_sources", repo / ".emoji_sources"]
    return next((c for c in candidates if c.is_dir()), candidates[-1])


def noto_font_path() -> Path | None:
    return next((Path(p) for p in NOTO_FONT_PATHS if Path(p).is_file()), None)


def _npm(root: Path, package: str) -> Path:
    return root / "node_modules" / package


def _required_files(style: str, root: Path) -> list[Path]:
    if style == "noto":
        return [noto_font_path() or Path(NOTO_FONT_PATHS[0])]
    if style in ICONIFY:
        files = [_npm(root, f"@iconify-json/{ICONIFY[style]}") / "icons.json"]
        if style == "fluent-color":  # its own chars.json is empty: names come from the flat set
            files.append(_npm(root, "@iconify-json/fluent-emoji-flat") / "chars.json")
        return files
    if style == "fluent-3d":
        return [_npm(root, "@lobehub/fluent-emoji-3d") / "assets"]
    if style == "openmoji":
        return [_npm(root, "openmoji") / "color" / "svg"]
    if style == "openmoji-outline":
        return [_npm(root, "openmoji") / "black" / "svg"]
    if style == "emojione":
        return [root / "gemojione" / "assets" / "svg"]
    raise ValueError(f"unknown emoji style {style!r}; choose from {sorted(STYLES)}")


def missing_reason(style: str, root: Path) -> str | None:
    """None when `style` can be rendered here, else what is missing and how to install it."""
    missing = [str(p) for p in _required_files(style, root) if not p.exists()]
    if style not in ("noto", "fluent-3d") and _svg_renderer() is None:
        missing.append("the Python package resvg-py (pip install resvg-py)")
    if not missing:
        return None
    info = STYLES[style]
    return f"{info.package}: missing {', '.join(missing)}; install with: {info.install}"


# ----------------------------------------------------------------------------- names and keywords


@dataclass
class EmojiInfo:
    key: str
    name: str  # CLDR-style name without skin tones: "waving hand", "flag: France"
    text: str = ""  # the fully-qualified emoji string, when known
    group: str = ""  # "animals & nature"
    keywords: list[str] = field(default_factory=list)

    @property
    def tones(self) -> tuple[str, ...]:
        return tones_of_key(self.key)


_TONE_RE = re.compile(r"[:,]?\s*\b(?:medium-light|medium-dark|light|medium|dark) skin tone\b")


def clean_name(label: str) -> str:
    """'kiss: woman, man, light skin tone' -> 'kiss: woman, man'; underscores become spaces."""
    name = label.strip(":").replace("_", " ")
    stripped = _TONE_RE.sub("", name).strip(" ,:")
    return stripped or name


@lru_cache(maxsize=4)
def load_catalogue(root: Path) -> dict[str, EmojiInfo]:
    """Every emoji with a name, merged from emojibase-data, openmoji.json, the `emoji` Python
    package, gemojione's index and emojilib; the first source to name a key wins, keywords merge."""
    cat: dict[str, EmojiInfo] = {}
    readers = (_from_emojibase, _from_openmoji, _from_emoji_package, _from_gemojione, _from_twemoji)
    for reader in readers:
        for key, name, text, group, keywords in reader(root):
            info = cat.setdefault(key, EmojiInfo(key, clean_name(name)))
            info.text = info.text or text
            info.group = info.group or group
            info.keywords.extend(keywords)
    for key, keywords in _from_emojilib(root):
        if key in cat:
            cat[key].keywords.extend(keywords)
    for info in cat.values():
        words = (k.strip().lower().replace("_", " ") for k in info.keywords)
        info.keywords = [k for k in dict.fromkeys(words) if k and k != info.name.lower()][:12]
    return cat


def fallback_info(key: str) -> EmojiInfo | None:
    """unicodedata's name for a single code point, when no emoji list names it."""
    try:
        return EmojiInfo(key, unicodedata.name(text_of_key(key)).lower(), text_of_key(key))
    except (ValueError, TypeError):  # unnamed, or several code points
        return None


Entry = tuple[str, str, str, str, list[str]]  # key, name, text, group, keywords


def _load_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _emojibase_groups(root: Path) -> dict:
    path = _npm(root, "emojibase-data") / "en" / "messages.json"
    return {g["key"]: g["message"] for g in _load_json(path)["groups"]} if path.exists() else {}


def _from_emojibase(root: Path) -> Iterator[Entry]:
    path = _npm(root, "emojibase-data") / "en" / "data.json"
    if not path.exists():
        return
    groups = list(_emojibase_groups(root).values())
    for e in _load_json(path):
        group = groups[e["group"]] if "group" in e and e["group"] < len(groups) else ""
        tags = e.get("tags", [])
        for item in [e, *e.get("skins", [])]:
            yield normalise_key(item["hexcode"]), item["label"], item["emoji"], group, tags


def _from_openmoji(root: Path) -> Iterator[Entry]:
    path = _npm(root, "openmoji") / "data" / "openmoji.json"
    if not path.exists():
        return
    groups = _emojibase_groups(root)
    for e in _load_json(path):
        group = e["subgroups"] if e["group"].startswith("extras") else e["group"]
        group = groups.get(group, group.replace("-", " "))
        tags = [t for t in (e["tags"] + "," + e["openmoji_tags"]).split(",") if t.strip()]
        yield normalise_key(e["hexcode"]), e["annotation"], e["emoji"], group, tags


def _from_emoji_package(root: Path) -> Iterator[Entry]:
    try:
        import emoji
    except ImportError:
        return
    qualified = emoji.STATUS["fully_qualified"]
    for text, data in emoji.EMOJI_DATA.items():
        if data.get("status") == qualified:
            yield key_of_text(text), data["en"], text, "", []


def _from_gemojione(root: Path) -> Iterator[Entry]:
    path = root / "gemojione" / "config" / "index.json"
    if not path.exists():
        return
    for e in _load_json(path).values():
        yield normalise_key(e["unicode"]), e["name"], e["moji"], e["category"], e["keywords"]


def _from_twemoji(root: Path) -> Iterator[Entry]:
    """Icon names ("skier-light-skin-tone") for the few emoji newer lists do not have."""
    path = _npm(root, "@iconify-json/twemoji") / "chars.json"
    if path.exists():
        for hexcode, name in _load_json(path).items():
            name = name.replace("-", " ").replace("medium light", "medium-light")
            yield normalise_key(hexcode), name.replace("medium dark", "medium-dark"), "", "", []


def _from_emojilib(root: Path) -> Iterator[tuple[str, list[str]]]:
    path = _npm(root, "emojilib") / "dist" / "emoji-en-US.json"
    if path.exists():
        for text, words in _load_json(path).items():
            yield key_of_text(text), words[1:]  # words[0] is the name


# ----------------------------------------------------------------------------- keys of a style


def style_keys(style: str, root: Path) -> list[str]:
    """The keys `style` has art for, sorted; Noto: every named emoji (the font decides later)."""
    if style == "noto":
        return sorted(k for k, info in load_catalogue(root).items() if info.text)
    if style in ICONIFY:
        return sorted(_iconify_chars(style, root))
    return sorted(_file_index(style, root))


def _iconify_chars(style: str, root: Path) -> dict[str, str]:
    # the colour set ships an empty chars.json: it shares icon names with the flat set
    chars_set = "fluent-emoji-flat" if style == "fluent-color" else ICONIFY[style]
    chars = _load_json(_npm(root, f"@iconify-json/{chars_set}") / "chars.json")
    icons = _iconify_icons(style, root)
    known = icons["icons"].keys() | icons.get("aliases", {}).keys()
    out: dict[str, str] = {}
    for hexcode, name in chars.items():
        if name in known:
            out.setdefault(normalise_key(hexcode), name)
    return out


def _file_index(style: str, root: Path) -> dict[str, Path]:
    folder = _required_files(style, root)[0]
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in (".svg", ".webp", ".png"):
            out.setdefault(normalise_key(path.stem), path)
    return out


# ----------------------------------------------------------------------------- readers


def read_style(
    style: str, keys: Iterable[str], size: int, root: Path
) -> Iterator[tuple[str, Image.Image | None]]:
    """Yield (key, RGBA image of size x size) for each key; None when the source cannot draw the
    key as one picture (a missing file, or a ZWJ sequence the font draws as several glyphs)."""
    render = {
        "noto": _render_noto,
        "fluent-3d": _render_bitmap,
        "openmoji": _render_svg_file,
        "openmoji-outline": _render_svg_file,
        "emojione": _render_svg_file,
    }.get(style, _render_iconify)
    for key in keys:
        yield key, render(style, key, size, root)


def _fit(img: Image.Image, size: int) -> Image.Image:
    """Centre on a transparent square, then resample to size (Pillow premultiplies RGBA)."""
    img = img.convert("RGBA")
    side = max(img.size)
    if img.size != (side, side):
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        img = square
    return img if side == size else img.resize((size, size), Image.Resampling.LANCZOS)


@lru_cache(maxsize=1)
def _noto_font():
    from PIL import ImageFont

    return ImageFont.truetype(str(noto_font_path()), NOTO_PX, layout_engine=ImageFont.Layout.RAQM)


def _render_noto(style: str, key: str, size: int, root: Path) -> Image.Image | None:
    from PIL import ImageDraw

    info = load_catalogue(root).get(key)
    text = info.text if info and info.text else text_of_key(key)
    font = _noto_font()
    one_glyph = font.getlength("\U0001f98a")
    if font.getlength(text) > 1.5 * one_glyph:  # the font lacks this sequence: several glyphs
        return None
    side = int(one_glyph) + 8
    img = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.text((side / 2, side / 2), text, font=font, embedded_color=True, anchor="mm")
    return _fit(img, size)


def _render_bitmap(style: str, key: str, size: int, root: Path) -> Image.Image | None:
    path = _cached_file_index(style, root).get(key)
    if path is None:
        return None
    with Image.open(path) as img:
        return _fit(img, size)


@lru_cache(maxsize=8)
def _cached_file_index(style: str, root: Path) -> dict[str, Path]:
    return _file_index(style, root)


def _svg_renderer():
    try:
        import resvg_py
    except ImportError:
        return None
    return resvg_py


def svg_to_image(svg: str, size: int) -> Image.Image:
    """Rasterise an SVG string to a size x size RGBA image (resvg: about 1-2 ms an icon)."""
    resvg = _svg_renderer()
    png = resvg.svg_to_bytes(svg_string=svg, width=size, height=size, skip_system_fonts=True)
    return _fit(Image.open(io.BytesIO(bytes(png))), size)


def _render_svg_file(style: str, key: str, size: int, root: Path) -> Image.Image | None:
    path = _cached_file_index(style, root).get(key)
    if path is None:
        return None
    return svg_to_image(path.read_text(encoding="utf-8"), size)


@lru_cache(maxsize=3)
def _iconify_icons(style: str, root: Path) -> dict:
    return _load_json(_npm(root, f"@iconify-json/{ICONIFY[style]}") / "icons.json")


@lru_cache(maxsize=3)
def _cached_iconify_chars(style: str, root: Path) -> dict[str, str]:
    return _iconify_chars(style, root)


def _render_iconify(style: str, key: str, size: int, root: Path) -> Image.Image | None:
    name = _cached_iconify_chars(style, root).get(key)
    if name is None:
        return None
    return svg_to_image(iconify_svg(_iconify_icons(style, root), name), size)


def iconify_svg(icon_set: dict, name: str) -> str:
    """Assemble a square SVG for one icon of an Iconify JSON set, resolving aliases and their
    flips/rotations (format: iconify.design/docs/types/iconify-json.html)."""
    h_flip, v_flip, rotate, props = False, False, 0, {}
    aliases = icon_set.get("aliases", {})
    while name in aliases:  # an alias points at a parent and may add transforms
        alias = aliases[name]
        h_flip ^= bool(alias.get("hFlip"))
        v_flip ^= bool(alias.get("vFlip"))
        rotate += alias.get("rotate", 0)
        props = {**{k: v for k, v in alias.items() if k in ("width", "height")}, **props}
        name = alias["parent"]
    icon = icon_set["icons"][name]
    h_flip ^= bool(icon.get("hFlip"))
    v_flip ^= bool(icon.get("vFlip"))
    rotate += icon.get("rotate", 0)
    left, top = icon.get("left", icon_set.get("left", 0)), icon.get("top", icon_set.get("top", 0))
    w = props.get("width", icon.get("width", icon_set.get("width", 16)))
    h = props.get("height", icon.get("height", icon_set.get("height", 16)))
    cx, cy = left + w / 2, top + h / 2
    transform = f"rotate({90 * (rotate % 4)} {cx} {cy})"
    if h_flip or v_flip:
        sx, sy = (-1 if h_flip else 1), (-1 if v_flip else 1)
        transform += f" translate({cx} {cy}) scale({sx} {sy}) translate({-cx} {-cy})"
    side = max(w, h)  # a square viewBox keeps the aspect ratio of non-square icons
    box = f"{cx - side / 2} {cy - side / 2} {side} {side}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box}">'
        f'<g transform="{transform}">{icon["body"]}</g></svg>'
    )
