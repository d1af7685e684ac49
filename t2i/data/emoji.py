"""`t2i data emoji`: render every installed open-licence emoji style to a captioned image folder.

Output (the standard folder format, so it trains like any user's folder):
    DIR/images/<style>/<key>.png    RGB, alpha composited on `background` (white)
    DIR/metadata.jsonl              file_name, text, captions, key, style, name, group, split, ...
    DIR/heldout.json                the held-out (emoji, style) pairs, split=heldout in metadata
    DIR/ATTRIBUTION.md              each style's licence and source
    DIR/summary.json                images per style, skipped renders, time
Sources: `bash scripts/install-emoji-sources.sh` (npm + Debian); see t2i/data/emoji_sources.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy (Pillow); imported inside the functions that need it
    from t2i.data.emoji_sources import EmojiInfo, EmojiStyle

ATTRIBUTION_FILE = Path(__file__).resolve().parents[1] / "assets" / "emoji_ATTRIBUTION.md"
CHUNK = 48  # emoji per worker task: large enough to amortise IPC, small enough for a smooth bar


def build_emoji_dataset(
    out_dir: str | os.PathLike,
    size: int = 64,
    styles: list[str] | None = None,  # None: every style installed here (missing ones warn)
    limit: int | None = None,  # at most this many emoji per style (the same spread-out keys)
    heldout_fraction: float = 0.02,  # share of (emoji, style) pairs kept out of training
    seed: int = 0,  # picks the held-out pairs and the keyword captions
    background: tuple[int, int, int] = (255, 255, 255),
    workers: int | None = None,  # processes; None: min(2, cores)
    sources: str | os.PathLike | None = None,  # None: $T2I_EMOJI_SOURCES or .emoji_sources
    verbose: bool = True,  # tqdm bar and the printed summary
) -> dict:
    """Render the emoji sets to `out_dir` and return the summary (also in summary.json)."""
    from t2i.data import emoji_sources as es

    _check_args(size, limit, heldout_fraction, background)
    start = time.perf_counter()
    root = es.sources_dir(sources)
    chosen, skipped_styles = _available_styles(styles, root)
    catalogue = es.load_catalogue(root)
    plan, stats = _plan(chosen, root, catalogue, limit)
    out = Path(out_dir)
    for style in chosen:
        (out / "images" / style).mkdir(parents=True, exist_ok=True)
    rendered = _render_all(plan, size, root, out, background, workers, verbose)
    for style, _key, status in rendered:
        stats[style][status] += 1
    ok = sorted((s, k) for s, k, status in rendered if status == "images")
    heldout = choose_heldout(ok, heldout_fraction, seed)
    rows = [_row(catalogue, es.STYLES[s], k, (s, k) in heldout, seed) for s, k in ok]
    _write_outputs(out, rows, heldout, heldout_fraction, seed, chosen)
    _remove_stale(out, rows)
    for style, _key in heldout:
        stats[style]["heldout"] += 1
    summary = {
        "out_dir": str(out),
        "size": size,
        "images": len(rows),
        "heldout": len(heldout),
        "seconds": round(time.perf_counter() - start, 1),
        "styles": stats,
        "skipped_styles": skipped_styles,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _append_attribution(out, summary)
    if verbose:
        print(format_summary(summary))
    return summary


def _check_args(size, limit, heldout_fraction, background) -> None:
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8 pixels, got {size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    if len(background) != 3 or not all(0 <= int(c) <= 255 for c in background):
        raise ValueError(f"background must be an (r, g, b) tuple in 0..255, got {background!r}")


def _available_styles(styles: list[str] | None, root: Path) -> tuple[list[str], dict[str, str]]:
    """Styles to build, and the skipped ones with the reason. A style the user asked for by name
    must be installed; of the default 'all', the missing ones are skipped with a warning."""
    from t2i.data.emoji_sources import STYLES, missing_reason

    if styles is not None:
        unknown = [s for s in styles if s not in STYLES]
        if unknown or not styles:
            raise ValueError(f"unknown emoji style(s) {unknown}; choose from {list(STYLES)}")
        for style in styles:
            if reason := missing_reason(style, root):
                raise FileNotFoundError(f"emoji style {style!r} is not installed: {reason}")
        return list(dict.fromkeys(styles)), {}
    reasons = {style: missing_reason(style, root) for style in STYLES}
    chosen = [style for style, reason in reasons.items() if reason is None]
    skipped = {style: reason for style, reason in reasons.items() if reason is not None}
    if skipped:
        listed = "; ".join(f"{style!r} ({reason})" for style, reason in skipped.items())
        warnings.warn(f"skipping emoji styles not installed here: {listed}", stacklevel=3)
    if not chosen:
        raise FileNotFoundError(f"no emoji style is installed under {root}; {skipped}")
    return chosen, skipped


def _spread(key: str) -> str:
    """A fixed pseudo-random order of keys: a `limit` then samples every group, and the first
    N keys of each style mostly coincide (so held-out pairs exist even in small builds)."""
    return hashlib.sha1(key.encode()).hexdigest()


def _plan(chosen, root, catalogue, limit) -> tuple[dict[str, list[str]], dict[str, dict]]:
    from t2i.data.emoji_sources import fallback_info, style_keys

    plan, stats = {}, {}
    for style in chosen:
        keys = style_keys(style, root)
        named = [k for k in keys if k in catalogue or fallback_info(k)]
        plan[style] = sorted(named, key=_spread)[:limit]
        stats[style] = dict(images=0, heldout=0, blank=0, unrenderable=0)
        stats[style]["unnamed"] = len(keys) - len(named)
    return plan, stats


# ----------------------------------------------------------------------------- rendering


def _render_all(plan, size, root, out, background, workers, verbose) -> list[tuple[str, str, str]]:
    """Render every planned (style, key); returns (style, key, status) with status one of
    'images' (written), 'blank' (nothing visible) or 'unrenderable' (no single picture)."""
    from tqdm import tqdm

    tasks = [
        (style, keys[i : i + CHUNK], size, root, out, tuple(background))
        for style, keys in plan.items()
        for i in range(0, len(keys), CHUNK)
    ]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    total = sum(len(k) for k in plan.values())
    results: list[tuple[str, str, str]] = []
    with tqdm(total=total, desc="emoji", unit="img", disable=not verbose) as bar:
        if workers > 1 and len(tasks) > 1:
            import multiprocessing

            with multiprocessing.get_context().Pool(workers) as pool:
                for done in pool.imap_unordered(_render_chunk, tasks):
                    results += done
                    bar.update(len(done))
        else:
            for task in tasks:
                results += _render_chunk(task)
                bar.update(len(task[1]))
    return results


def _render_chunk(task) -> list[tuple[str, str, str]]:
    from PIL import Image

    from t2i.data.emoji_sources import read_style

    style, keys, size, root, out, background = task
    done = []
    for key, img in read_style(style, keys, size, root):
        if img is None:
            done.append((style, key, "unrenderable"))
            continue
        canvas = Image.new("RGBA", img.size, (*background, 255))
        rgb = Image.alpha_composite(canvas, img).convert("RGB")
        if is_blank(img, rgb):
            done.append((style, key, "blank"))
            continue
        rgb.save(out / "images" / style / f"{key}.png")
        done.append((style, key, "images"))
    return done


def is_blank(rgba, rgb) -> bool:
    """Nothing visible: every pixel (almost) transparent, or one flat colour on the background."""
    alpha_max = rgba.getchannel("A").getextrema()[1]
    return alpha_max < 8 or all(lo == hi for lo, hi in rgb.getextrema())


# ----------------------------------------------------------------------------- held-out pairs


def _unit_hash(*parts) -> float:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def choose_heldout(
    pairs: list[tuple[str, str]], fraction: float, seed: int = 0
) -> set[tuple[str, str]]:
    """Pick held-out (style, key) pairs deterministically. The unit is an emoji with all its skin
    tones in one style, and only emoji drawn in 2+ styles qualify, keeping at least one style in
    training: a held-out pair tests an emoji the model has seen, in a style it has seen, but never
    together."""
    from t2i.data.emoji_sources import base_key

    styles_of: dict[str, set[str]] = {}
    for style, key in pairs:
        styles_of.setdefault(base_key(key), set()).add(style)
    held_units = set()
    for base, styles in styles_of.items():
        if len(styles) < 2:
            continue
        scored = sorted(styles, key=lambda s, b=base: _unit_hash(seed, b, s))
        chosen = [s for s in scored if _unit_hash(seed, base, s) < fraction]
        held_units.update((s, base) for s in chosen[: len(styles) - 1])
    return {(s, k) for s, k in pairs if (s, base_key(k)) in held_units}


# ----------------------------------------------------------------------------- captions and files


def captions(info: EmojiInfo, style: EmojiStyle, seed: int = 0) -> list[str]:
    """The caption first ('fox emoji, 3d style'), then variants with keywords and the group."""
    tones = " and ".join(info.tones)
    subject = f"{info.name} emoji" + (f", {tones}" if tones else "")
    out = [f"{subject}, {style.phrase} style"]
    if info.keywords:
        ranked = sorted(info.keywords, key=lambda w: _unit_hash(seed, info.key, w))
        words = ", ".join([info.name, *ranked[:3], *([tones] if tones else [])])
        out.append(f"{words}, {style.phrase} style emoji")
    if info.group:
        with_tones = f" with {tones}" if tones else ""
        out.append(f"{info.name}{with_tones}, {info.group}, emoji in {style.phrase} style")
    return out


def _row(catalogue, style: EmojiStyle, key: str, heldout: bool, seed: int) -> dict:
    from t2i.data.emoji_sources import fallback_info

    info = catalogue.get(key) or fallback_info(key)
    texts = captions(info, style, seed)
    return {
        "file_name": f"images/{style.name}/{key}.png",
        "text": texts[0],
        "captions": texts,
        "key": key,
        "emoji": info.text,
        "style": style.name,
        "name": info.name,
        "group": info.group,
        "tones": list(info.tones),
        "split": "heldout" if heldout else "train",
    }


def _write_outputs(out: Path, rows, heldout, fraction, seed, chosen) -> None:
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    held = {
        "fraction": fraction,
        "seed": seed,
        "unit": "one emoji with all its skin tones, in one style; only emoji in 2+ styles",
        "pairs": [{"key": k, "style": s} for s, k in sorted(heldout)],
    }
    (out / "heldout.json").write_text(json.dumps(held, indent=1) + "\n")
    shutil.copyfile(ATTRIBUTION_FILE, out / "ATTRIBUTION.md")


def _remove_stale(out: Path, rows: list[dict]) -> None:
    """Delete our PNGs from an earlier build of the same folder that this build does not list:
    folder readers treat every image under DIR as data."""
    from t2i.data.emoji_sources import STYLES

    listed = {r["file_name"] for r in rows}
    for style in STYLES:
        for path in (out / "images" / style).glob("*.png"):
            if f"images/{style}/{path.name}" not in listed:
                path.unlink()


def _append_attribution(out: Path, summary: dict) -> None:
    from t2i.data.emoji_sources import STYLES

    lines = ["", "## This build", "", "| style | images | licence | source |", "|---|---|---|---|"]
    for style, st in summary["styles"].items():
        info = STYLES[style]
        lines.append(f"| {style} | {st['images']} | {info.licence} | {info.package} |")
    with open(out / "ATTRIBUTION.md", "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def format_summary(summary: dict) -> str:
    head = f"{'style':<18}{'images':>8}{'heldout':>9}{'blank':>7}{'unrend.':>9}{'unnamed':>9}"
    lines = [head]
    for style, st in summary["styles"].items():
        lines.append(
            f"{style:<18}{st['images']:>8}{st['heldout']:>9}{st['blank']:>7}"
            f"{st['unrenderable']:>9}{st['unnamed']:>9}"
        )
    for style, reason in summary["skipped_styles"].items():
        lines.append(f"{style:<18} skipped: {reason}")
    lines.append(
        f"{summary['images']} images ({summary['heldout']} held out) at {summary['size']} px "
        f"in {summary['seconds']} s -> {summary['out_dir']}"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


EXAMPLES = """examples:
  t2i data emoji --out data_cache/emoji64
  t2i data emoji --out /tmp/emoji32 --size 32 --styles noto,fluent-3d --limit 200
sources: bash scripts/install-emoji-sources.sh
         (the Noto style needs the font: apt-get install fonts-noto-color-emoji)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `emoji` to the `t2i data` group."""
    p = subparsers.add_parser(
        "emoji",
        help="render the open-licence emoji styles to a captioned image folder",
        description="Render every installed emoji style (Noto, Twemoji, Fluent flat/colour/3D, "
        "OpenMoji colour/outline, EmojiOne) to PNG with captions, a held-out split and an "
        "attribution file.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument(
        "--styles",
        help="comma-separated styles (default: all installed): noto, twemoji, fluent-flat, "
        "fluent-color, fluent-3d, openmoji, openmoji-outline, emojione",
    )
    p.add_argument("--limit", type=int, help="at most this many emoji per style")
    p.add_argument("--heldout-fraction", type=float, default=0.02, help="default 0.02")
    p.add_argument("--seed", type=int, default=0, help="picks the held-out pairs")
    p.add_argument("--workers", type=int, help="processes (default: min(2, cores))")
    p.add_argument("--sources", help="installed sources folder (default: .emoji_sources)")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    styles = [s.strip() for s in args.styles.split(",") if s.strip()] if args.styles else None
    summary = build_emoji_dataset(
        args.out,
        size=args.size,
        styles=styles,
        limit=args.limit,
        heldout_fraction=args.heldout_fraction,
        seed=args.seed,
        workers=args.workers,
        sources=args.sources,
    )
    print(f"wrote {summary['images']} images and metadata.jsonl to {args.out}", file=sys.stderr)
    return 0
