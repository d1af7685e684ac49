"""The emoji builder on a few real emoji of every installed style (scripts/install-emoji-sources.sh
installs them; a style not installed here is skipped with its install hint)."""

import argparse
import json
import random

import numpy as np
import pytest
from PIL import Image

from t2i.data import emoji_sources as es
from t2i.data.emoji import add_parser, build_emoji_dataset, captions, choose_heldout

ROOT = es.sources_dir()
INSTALLED = [s for s in es.STYLES if es.missing_reason(s, ROOT) is None]
SIZE = 32


def _needs(style):
    reason = es.missing_reason(style, ROOT)
    if reason:
        pytest.skip(f"emoji style {style} not installed: {reason}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not INSTALLED:
        pytest.skip("no emoji style installed: bash scripts/install-emoji-sources.sh")
    out = tmp_path_factory.mktemp("emoji")
    summary = build_emoji_dataset(
        out, size=SIZE, limit=6, heldout_fraction=0.5, workers=1, verbose=False
    )
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    return out, summary, rows


@pytest.mark.parametrize("style", list(es.STYLES))
def test_each_style_renders_real_emoji(built, style):
    _needs(style)
    out, summary, rows = built
    mine = [r for r in rows if r["style"] == style]
    assert len(mine) >= 4, summary["styles"][style]  # limit 6; Noto may lack a ZWJ sequence
    phrase = es.STYLES[style].phrase
    for r in mine:
        img = Image.open(out / r["file_name"])
        assert img.size == (SIZE, SIZE) and img.mode == "RGB"
        pixels = np.asarray(img, dtype=np.float32)
        assert pixels.std() > 10, f"{r['file_name']} looks blank"
        assert tuple(pixels[0, 0]) == (255.0, 255.0, 255.0)  # alpha composited on white
        assert r["name"] in r["text"] and f"{phrase} style" in r["text"]
        assert all(t in r["text"] for t in r["tones"])


def test_metadata_is_the_standard_folder_format(built):
    out, summary, rows = built
    assert len(rows) == summary["images"] > 0
    for r in rows:
        assert {"file_name", "text", "key", "style", "name", "group", "split"} <= r.keys()
        assert (out / r["file_name"]).is_file()
        assert r["split"] in ("train", "heldout")
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert on_disk == {r["file_name"] for r in rows}
    attribution = (out / "ATTRIBUTION.md").read_text()
    for style in {r["style"] for r in rows}:
        assert f"| {style} |" in attribution and es.STYLES[style].licence in attribution


def test_heldout_split_is_disjoint_and_listed(built):
    out, summary, rows = built
    pairs = json.loads((out / "heldout.json").read_text())["pairs"]
    listed = {(p["style"], p["key"]) for p in pairs}
    held = {(r["style"], r["key"]) for r in rows if r["split"] == "heldout"}
    assert held == listed
    if len(INSTALLED) > 1:
        assert held, "fraction 0.5 over several styles should hold some pairs out"
    train_units = {(r["style"], es.base_key(r["key"])) for r in rows if r["split"] == "train"}
    train_bases = {b for _, b in train_units}
    for style, key in held:  # unseen as a pair, but the emoji is seen in another style
        assert (style, es.base_key(key)) not in train_units
        assert es.base_key(key) in train_bases


def test_choose_heldout_is_deterministic_and_keeps_one_style():
    pairs = [(s, k) for s in ("a", "b", "c") for k in ("1f98a", "1f44b", "1f44b-1f3fb", "2764")]
    pairs.append(("a", "1f600"))  # only in one style: never held out
    held = choose_heldout(pairs, 0.5, seed=3)
    assert held == choose_heldout(random.Random(0).sample(pairs, len(pairs)), 0.5, seed=3)
    assert ("a", "1f600") not in held and choose_heldout(pairs, 0.0) == set()
    almost_all = choose_heldout(pairs, 0.999)
    for key in ("1f98a", "1f44b", "2764"):  # one of the three styles always stays in training
        assert len({s for s, k in almost_all if es.base_key(k) == key}) == 2
    # all tones of an emoji in a style go together
    assert (("b", "1f44b") in held) == (("b", "1f44b-1f3fb") in held)


def test_captions_name_style_and_skin_tone_words():
    info = es.EmojiInfo("1f44b-1f3fe", "waving hand", "", "people & body", ["hello", "bye"])
    texts = captions(info, es.STYLES["fluent-3d"])
    assert texts[0] == "waving hand emoji, medium-dark skin tone, 3d style"
    assert all("medium-dark skin tone" in t and "3d style" in t for t in texts)
    assert any("hello" in t for t in texts) and any("people & body" in t for t in texts)
    assert es.clean_name("kiss: woman, man, light skin tone, dark skin tone") == "kiss: woman, man"


def test_keys_are_lowercase_hex_without_fe0f():
    assert es.normalise_key("1F44B-FE0F-1F3FD") == "1f44b-1f3fd"
    assert es.key_of_text("\u2764\ufe0f") == "2764"
    assert es.base_key("1f44b-1f3fd") == "1f44b" and es.base_key("1f3fd") == "1f3fd"
    flag = "1f3f4-e0067-e0062-e0073-e0063-e0074"  # a file name without CANCEL TAG
    assert es.normalise_key(flag) == flag + "-e007f"


def test_noto_drops_sequences_it_draws_as_several_glyphs():
    _needs("noto")
    (_, fox), (_, pair) = es.read_style("noto", ["1f98a", "1f98a-200d-1f42d"], SIZE, ROOT)
    assert fox is not None and fox.size == (SIZE, SIZE)
    assert pair is None


def test_iconify_alias_flip_mirrors_the_parent():
    _needs("fluent-flat")
    icon_set = {
        "width": 16,
        "height": 16,
        "icons": {"arrow": {"body": '<path d="M0 0h10v4H0z" fill="#f00"/>'}},
        "aliases": {"arrow-flipped": {"parent": "arrow", "hFlip": True}},
    }
    a = np.asarray(es.svg_to_image(es.iconify_svg(icon_set, "arrow"), 16))
    b = np.asarray(es.svg_to_image(es.iconify_svg(icon_set, "arrow-flipped"), 16))
    assert a[..., 3].sum() > 0
    np.testing.assert_array_equal(a[:, ::-1], b)


def test_parallel_build_equals_serial(tmp_path):
    styles = INSTALLED[:2]
    if not styles:
        pytest.skip("no emoji style installed")
    kw = dict(size=16, styles=styles, limit=3, heldout_fraction=0.3, verbose=False)
    s1 = build_emoji_dataset(tmp_path / "one", workers=1, **kw)
    build_emoji_dataset(tmp_path / "two", workers=1, **{**kw, "limit": 5})  # a stale build
    s2 = build_emoji_dataset(tmp_path / "two", workers=2, **kw)
    assert s1["styles"] == s2["styles"]
    meta = [(tmp_path / d / "metadata.jsonl").read_text() for d in ("one", "two")]
    assert meta[0] == meta[1]
    on_disk = sorted(p.name for p in (tmp_path / "two").rglob("*.png"))
    assert on_disk == sorted(p.name for p in (tmp_path / "one").rglob("*.png"))
    for r in map(json.loads, meta[0].splitlines()):
        one, two = (np.asarray(Image.open(tmp_path / d / r["file_name"])) for d in ("one", "two"))
        np.testing.assert_array_equal(one, two)


def test_bad_input_and_missing_sources(tmp_path):
    with pytest.raises(ValueError, match="unknown emoji style.*'noto'"):
        build_emoji_dataset(tmp_path, styles=["notto"], verbose=False)
    with pytest.raises(ValueError, match="size"):
        build_emoji_dataset(tmp_path, size=0, verbose=False)
    empty = tmp_path / "no_sources"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="install-emoji-sources"):
        build_emoji_dataset(tmp_path, styles=["twemoji"], sources=empty, verbose=False)
    if es.missing_reason("noto", empty) is None:  # the font is a system package
        with pytest.warns(UserWarning, match="skipping emoji styles.*'twemoji'"):
            s = build_emoji_dataset(tmp_path / "o", limit=2, sources=empty, verbose=False)
        assert list(s["styles"]) == ["noto"] and "openmoji" in s["skipped_styles"]


def test_cli_subcommand(tmp_path, capsys):
    style = INSTALLED[0] if INSTALLED else pytest.skip("no emoji style installed")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    out = tmp_path / "cli"
    args = parser.parse_args(["emoji", "--out", str(out), "--styles", style, "--limit", "2"])
    assert args.func(args) == 0
    rows = (out / "metadata.jsonl").read_text().splitlines()
    assert 1 <= len(rows) <= 2 and style in capsys.readouterr().out
