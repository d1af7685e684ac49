"""Spatial controls over HTTP: listed per model, applied from a base64 condition image, recorded in
the image's parameters, refused with a clear 400 when malformed; uploads never stay behind."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_control import make_control
from test_server import PROMPT, Running, b64png, decode, make_model

from t2i import load


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = make_model(tmp_path_factory.mktemp("model") / "tiny")
    make_control(load(folder), "controlnet", folder / "controls", "edges", trained=True)
    running = Running({"tiny": load(folder)}, max_queue=8, max_batch=4)
    yield running
    running.close()


def edges_png() -> str:
    rng = np.random.default_rng(0)
    return b64png(Image.fromarray(((rng.random((16, 16)) > 0.7) * 255).astype(np.uint8)))


def test_the_models_controls_are_listed(served):
    status, _, body = served.request("GET", "/api/models")
    assert status == 200
    import json

    (model,) = json.loads(body)["models"]
    assert model["controls"] == {"edges": {"kind": "edges", "arch": "controlnet", "size": 16}}


def test_a_control_changes_the_image_and_is_recorded(served):
    plain = decode(served.post("/api/generate", {"prompt": PROMPT, "seed": 1})[2]["images"][0])
    body = {"prompt": PROMPT, "seed": 1, "controls": [{"name": "edges", "image": edges_png()}]}
    status, _, answer = served.post("/api/generate", {**body, "guess_mode": True})
    assert status == 200, answer
    params, pixels = decode(answer["images"][0])
    assert params.controls[0][:5][2:] == (1.0, 0.0, 1.0) and params.guess_mode
    assert np.abs(pixels - plain[1]).mean() > 0.5
    assert list(served.server.upload_dir.iterdir()) == []


@pytest.mark.parametrize(
    "controls,message",
    [
        ([{"name": "nope", "image": "EDGES"}], "not loaded"),
        ([{"name": "edges", "image": "COLOUR"}], "has colour"),
        ([{"name": "edges", "image": "BIG"}], "32x32; the image drawn is 16x16"),
        ([{"name": "edges", "image": "not base64!"}], "base64-encoded"),
        ([{"name": "edges", "image": "EDGES", "scale": 9}], "scale must be a number in [0, 4]"),
        ([{"name": "edges", "image": "EDGES", "start": 0.9, "end": 0.1}], "start < end"),
        ([{"name": "edges"}], "controls must be at most 4 objects"),
        ([["edges", "EDGES"]], "controls must be at most 4 objects"),
        ([{"name": "edges", "image": "EDGES", "colour": 1}], "controls must be at most 4"),
        ([], "guess_mode draws from the controls"),
    ],
)
def test_bad_controls_are_4xx_and_leave_no_upload(served, controls, message):
    images = {
        "EDGES": edges_png(),
        "COLOUR": b64png(Image.new("RGB", (16, 16), (255, 0, 0))),
        "BIG": b64png(Image.new("L", (32, 32))),
    }
    controls = [
        {k: images.get(v, v) if k == "image" else v for k, v in c.items()}
        if isinstance(c, dict)
        else c
        for c in controls
    ]
    body = {"prompt": PROMPT, "controls": controls, "guess_mode": not controls}
    status, _, answer = served.post("/api/generate", body)
    assert (status, message in answer["error"]) == (400, True), answer
    assert list(served.server.upload_dir.iterdir()) == []
