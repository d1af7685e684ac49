"""A1111's conventions (t2i/a1111.py): the "parameters" PNG text written beside t2i's JSON and
read back when an image carries only it, and A1111's sampler names."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tiny_models import write_tiny_model

import t2i
from t2i.a1111 import PNG_KEY, parse_parameters, t2i_sampler, to_parameters
from t2i.params import GenerationParams


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny", steps=2)


def test_parameters_text_round_trips_quotes_commas_and_lines():
    p = GenerationParams(
        prompt="a red circle,\nabove: a square",
        negative="blue",
        model="shapes",
        sampler="euler_ancestral",
        steps=12,
        guidance=4.5,
        seed=9,
        width=64,
        height=48,
        loras=(("style", 0.5, "abc123"), ("subject", 1.0, "def456")),
        embeddings=(("teal", "0123456789ab"),),
    )
    text = to_parameters(p, "f9b85db2b0", "t2i 0.1")
    assert text.splitlines()[2] == "Negative prompt: blue"
    assert "Sampler: Euler a, CFG scale: 4.5, Seed: 9, Size: 64x48" in text
    assert 'Lora hashes: "style: abc123, subject: def456"' in text
    fields = parse_parameters(text)
    assert fields["prompt"] == p.prompt and fields["negative"] == "blue"
    assert fields["Lora hashes"] == "style: abc123, subject: def456"
    assert fields["TI hashes"] == "teal: 0123456789ab" and fields["Model hash"] == "f9b85db2b0"
    assert parse_parameters("just a prompt") == {"prompt": "just a prompt", "negative": ""}
    with pytest.raises(ValueError, match="at most"):
        parse_parameters("x" * 200_001)


def test_a1111_sampler_names_map_and_others_are_refused_by_name(model_dir):
    assert [t2i_sampler(n) for n in ("Euler a", "DPM++ 2M Karras", "ddim")] == [
        "euler_ancestral",
        "dpmpp_2m",
        "ddim",
    ]
    pipe = t2i.load(model_dir)
    assert pipe.params("a red circle", sampler="DPM++ 2M Karras").sampler == "dpmpp_2m"
    with pytest.raises(ValueError, match="unknown sampler 'UniPC'; choose from"):
        pipe.params("a red circle", sampler="UniPC")


def _only_a1111(src, dst):
    """The PNG as another tool writes it: the same pixels, only A1111's parameters chunk."""
    with Image.open(src) as im:
        info = PngInfo()
        info.add_text(PNG_KEY, im.text[PNG_KEY])
        im.save(dst, pnginfo=info)


def test_from_reads_a1111_parameters_when_there_is_no_t2i_chunk(model_dir, tmp_path, capsys):
    from t2i.cli import main

    out, foreign, again = tmp_path / "a.png", tmp_path / "foreign.png", tmp_path / "b.png"
    base = ["generate", "a red circle", "--model", str(model_dir), "--quiet", "--seed", "5"]
    assert main([*base, "--sampler", "Euler a", "--negative", "blue", "--out", str(out)]) == 0
    _only_a1111(out, foreign)
    assert "t2i" not in Image.open(foreign).text
    argv = ["generate", "--from", str(foreign), "--model", str(model_dir), "--quiet"]
    assert main([*argv, "--out", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    bad = tmp_path / "bad.png"
    info = PngInfo()
    info.add_text(PNG_KEY, "a cat\nSteps: many, Sampler: Euler")
    Image.new("RGB", (8, 8)).save(bad, pnginfo=info)
    assert main(["generate", "--from", str(bad), "--model", str(model_dir), "--quiet"]) == 2
    assert "Steps 'many' is not a number" in capsys.readouterr().err
