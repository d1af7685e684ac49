"""The images of fixed cases (tests/golden_cases.py) stay the same across refactors, up to the
float rounding that differs between machines: the records were made before the pipeline,
cascade, editing and parameter code was moved."""

from __future__ import annotations

import json

import numpy as np
import pytest
from golden_cases import PARAMS, PIXEL_SHARE, all_cases, mismatch, recorded_cases
from PIL import Image

RECORDED = recorded_cases() if PARAMS.exists() else {}


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    return all_cases(tmp_path_factory.mktemp("golden"))


def test_at_least_24_cases_cover_every_sampler_edit_and_family():
    assert len(RECORDED) >= 24
    for needed in ("shapes_heun", "fashion_inpaint_resample", "cascade_img2img", "emoji_bf16"):
        assert needed in RECORDED
    assert any(k.startswith("autoregressive") for k in RECORDED)
    assert all(path.is_file() for record in RECORDED.values() for path in record["images"])


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_images_match_the_recorded_ones(found, case):
    why = mismatch(found[case], RECORDED[case])
    assert why is None, (
        f"{case}: {why}; if that is meant, record anew with python3 tests/golden_cases.py "
        "--write and say why in the commit"
    )


def test_a_change_beyond_float_rounding_is_caught():
    """One level in a few values passes; two levels anywhere, one level in many values, or other
    parameters do not."""
    record = RECORDED["shapes_ddim"]
    with Image.open(record["images"][0]) as ref:
        ref.load()
    pixels = np.asarray(ref).copy()
    params = dict(record["params"][0])

    def image(values: np.ndarray, p: dict = params) -> Image.Image:
        img = Image.fromarray(values, ref.mode)
        img.info["t2i"] = json.dumps(p)
        return img

    def changed(index, step: int) -> np.ndarray:
        out = pixels.astype(np.int16)
        flat = out.reshape(-1)
        flat[index] = np.where(flat[index] >= 128, flat[index] - step, flat[index] + step)
        return out.astype(np.uint8)

    assert mismatch([image(pixels)], record) is None
    assert mismatch([image(changed([0, 7], 1))], record) is None
    assert "up to 2" in mismatch([image(changed([5], 2))], record)
    many = np.arange(0, pixels.size, max(1, int(1 / (4 * PIXEL_SHARE))))
    assert "up to 1 in" in mismatch([image(changed(many, 1))], record)
    assert "parameters" in mismatch([image(pixels, {**params, "seed": -1})], record)
    assert "images" in mismatch([image(pixels)] * 2, record)
