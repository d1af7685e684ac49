"""The images of fixed cases (tests/golden_cases.py) stay bit-identical across refactors: the
hashes were recorded before the pipeline, cascade, editing and parameter code was moved."""

from __future__ import annotations

import json

import pytest
from golden_cases import HASHES, all_digests


@pytest.fixture(scope="module")
def digests(tmp_path_factory):
    return all_digests(tmp_path_factory.mktemp("golden"))


def test_at_least_24_cases_cover_every_sampler_edit_and_family(digests):
    recorded = json.loads(HASHES.read_text())
    assert len(recorded) >= 24
    for needed in ("shapes_heun", "fashion_inpaint_resample", "cascade_img2img", "emoji_bf16"):
        assert needed in recorded
    assert any(k.startswith("autoregressive") for k in recorded)


@pytest.mark.parametrize("case", sorted(json.loads(HASHES.read_text())))
def test_images_are_bit_identical_to_the_recorded_ones(digests, case):
    assert digests[case] == json.loads(HASHES.read_text())[case], (
        f"{case}: the images or their parameters changed; if that is meant, record anew with "
        "python3 tests/golden_cases.py --write and say why in the commit"
    )
