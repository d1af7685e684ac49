"""A PNG's parameters are outside input: size, nesting and every field's type are checked."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from t2i.params import MAX_PARAMS_CHARS, GenerationParams, read_png_params, save_png


def test_round_trip_keeps_every_field(tmp_path):
    p = GenerationParams("a héllo", steps=3, guidance=2.5, seed=7, guidance_interval=[1.0, 2.0])
    path = save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", p)
    assert read_png_params(path) == p


def test_deep_nesting_is_a_value_error_not_a_recursion_error():
    """Issue 39: JSON nested 100k deep ended in a RecursionError traceback."""
    for depth in (100_000, 40_000):  # over the length limit; under it, json's recursion
        with pytest.raises(ValueError, match="x.png: parameters"):
            GenerationParams.from_json("[" * depth + "]" * depth, "x.png")


def test_length_is_bounded():
    text = json.dumps({"prompt": "x" * MAX_PARAMS_CHARS})
    with pytest.raises(ValueError, match=f"at most {MAX_PARAMS_CHARS}"):
        GenerationParams.from_json(text, "x.png")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("prompt", 5, "prompt must be a string, got 5"),
        ("steps", "3", "steps must be an integer, got '3'"),
        ("seed", 1.5, "seed must be an integer"),
        ("seed", True, "seed must be an integer"),
        ("guidance", float("inf"), "guidance must be a finite number"),
        ("strength", "0.5", "strength must be a finite number"),
        ("guidance_interval", [1, "x"], "guidance_interval must be null or [lo, hi]"),
        ("guidance_interval", {"lo": 1}, "guidance_interval must be null or [lo, hi]"),
        ("sampler", {"a": [1] * 100}, "sampler must be a string, got {'a': [1, 1,"),
    ],
)
def test_each_field_type_is_checked(field, value, message):
    text = json.dumps({"prompt": "a", field: value})
    with pytest.raises(ValueError, match="x.png: ") as err:
        GenerationParams.from_json(text, "x.png")
    assert message in str(err.value) and len(str(err.value)) < 200


def test_missing_or_non_png_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_png_params(tmp_path / "none.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png"):
        read_png_params(tmp_path / "junk.png")
