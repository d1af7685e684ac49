"""The Symbola emoji style (t2i/data/emoji_symbola.py): a user's kind of folder of captioned
glyphs, prompts about other subjects, and the style judge trained on real images
(t2i/evaluation/emoji_style.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from t2i.data import emoji_symbola as sym
from t2i.data.emoji_sources import read_style, sources_dir, text_of_key


def test_the_folder_holds_captioned_glyphs_and_the_prompts_other_subjects(tmp_path):
    folder = sym.write_style_folder(tmp_path / "symbola", count=12)
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 12 and len(list(folder.glob("*.txt"))) == 12
    caption = pngs[0].with_suffix(".txt").read_text().strip()
    assert caption.endswith(" emoji, symbola style")
    image = np.asarray(Image.open(pngs[0]))
    assert image.shape == (64, 64, 3) and image.min() < 64 and image[0, 0].tolist() == [255] * 3
    names = {p.with_suffix(".txt").read_text().split(" emoji,")[0] for p in pngs}
    names_all = {n.split(" emoji,")[0] for n in sym.style_prompts(200)}
    assert not names & names_all  # the prompts never ask for a subject of the folder
    assert sym.style_prompts(5) == sym.style_prompts(5)  # seeded


def test_a_glyph_the_font_lacks_is_none_and_bad_arguments_are_named(tmp_path):
    assert sym.render("\U0001fae0") is None  # melting face: newer than Symbola
    assert sym.render("\U0001f98a") is not None  # fox
    with pytest.raises(ValueError, match="count must be an integer in"):
        sym.write_style_folder(tmp_path, count=0)
    with pytest.raises(ValueError, match="size must be in"):
        sym.write_style_folder(tmp_path, count=2, size=4)
    with pytest.raises(FileNotFoundError, match="no emoji catalogue in"):
        sym.subjects(str(tmp_path / "nowhere"))
    held = [k for k, _ in sym.subjects() if sym.heldout_subject(k)]
    assert 0.1 < len(held) / len(sym.subjects()) < 0.3  # one in five, by hash


def test_the_style_judge_names_real_styles_of_subjects_it_never_saw():
    from t2i.evaluation.emoji_style import (
        load_style_judge,
        predict_styles,
        style_accuracy,
        to_input,
    )

    judge = load_style_judge()
    glyphs, keys = sym.symbola_images(heldout=True)
    assert style_accuracy(judge, to_input(glyphs[:40]), "symbola") >= 0.9
    white = Image.new("RGBA", (64, 64), (255, 255, 255, 255))
    renders = read_style("noto", keys[:40], 64, sources_dir())
    noto = [np.asarray(Image.alpha_composite(white, im).convert("RGB")) for _, im in renders if im]
    got = predict_styles(judge, to_input(np.stack(noto)))
    assert got.count("noto") / len(got) >= 0.7
    with pytest.raises(ValueError, match="styles"):
        style_accuracy(judge, to_input(glyphs[:2]), "crayon")
    assert text_of_key(keys[0])
