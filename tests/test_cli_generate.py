"""`t2i generate` end to end on a tiny model folder: files, parameters, reproduction, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image
from tiny_models import write_tiny_model

from t2i.cli import main
from t2i.params import read_png_params


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    vocab = "a red blue circle".split()
    folder = tmp_path_factory.mktemp("model")
    return write_tiny_model(folder, parameterisation="v", sampler="euler", vocab=vocab)


def run(*argv: str) -> int:
    return main(["generate", *argv, "--quiet"])


def test_writes_pngs_that_carry_and_reproduce_their_parameters(model_dir, tmp_path):
    out = tmp_path / "img.png"
    assert (
        run("a red circle", "--model", str(model_dir), "--n", "2", "--seed", "4", "--out", str(out))
        == 0
    )
    first, second = tmp_path / "img-4.png", tmp_path / "img-5.png"
    params = read_png_params(second)
    assert (params.prompt, params.seed, params.sampler, params.steps) == (
        "a red circle",
        5,
        "euler",
        3,
    )
    again = tmp_path / "again.png"
    assert run("--from", str(second), "--out", str(again)) == 0
    assert Image.open(again).tobytes() == Image.open(second).tobytes()
    assert Image.open(first).tobytes() != Image.open(second).tobytes()


def test_from_png_with_an_explicit_flag_overrides_that_value(model_dir, tmp_path):
    src = tmp_path / "a.png"
    assert run("a blue circle", "--model", str(model_dir), "--out", str(src)) == 0
    out = tmp_path / "b.png"
    assert run("--from", str(src), "--steps", "2", "--out", str(out)) == 0
    assert read_png_params(out).steps == 2
    assert read_png_params(out).prompt == "a blue circle"


@pytest.fixture(scope="module")
def interval_model(model_dir, tmp_path_factory):
    """The tiny model with a default guidance interval around its middle step (sigma 9.5)."""
    folder = tmp_path_factory.mktemp("interval") / "model"
    shutil.copytree(model_dir, folder)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["sampler"]["guidance_interval"] = [5.0, 20.0]
    index_path.write_text(json.dumps(index))
    return folder


def test_guidance_interval_is_recorded_and_reproduced_from_the_png(interval_model, tmp_path):
    """The model's default interval lands in the PNG; 'all' is recorded as null, and --from
    reproduces each image bit for bit although the model's default differs."""
    paths = {}
    for name, flags in {"default": [], "all": ["--guidance-interval", "all"]}.items():
        paths[name] = tmp_path / f"{name}.png"
        argv = ["a red circle", "--model", str(interval_model), "--out", str(paths[name])]
        assert run(*argv, *flags) == 0
    assert read_png_params(paths["default"]).guidance_interval == [5.0, 20.0]
    assert read_png_params(paths["all"]).guidance_interval is None
    pixels = {k: Image.open(p).tobytes() for k, p in paths.items()}
    assert pixels["default"] != pixels["all"]
    for name, path in paths.items():
        again = tmp_path / f"again-{name}.png"
        assert run("--from", str(path), "--out", str(again)) == 0
        assert Image.open(again).tobytes() == pixels[name]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--guidance-interval", "5,1"], "guidance interval must be two sigmas lo,hi"),
        (
            ["--guidance-interval", "fast"],
            "guidance interval must be 'all' or (lo, hi), got 'fast'",
        ),
        (["--guidance-interval", "1,2,3"], "guidance interval must be two sigmas lo,hi"),
        (["--sampler", "eulr"], "unknown sampler 'eulr'; choose from"),
        (["--steps", "0"], "steps must be in [1, 1000], got 0"),
        (["--guidance", "-2"], "guidance must be in [0, 100], got -2.0"),
        (["--size", "15x16"], "each side must be a multiple of 2"),
        (["--n", "1000000"], "--n must be in [1, 64], got 1000000"),
        (["--out", "/nonexistent-dir/x.png"], "folder /nonexistent-dir does not exist"),
        (["--out", "x.jpg"], "--out must name a .png file"),
        (["--seed", str(2**63 - 1), "--n", "2"], "seed must be in [0, 9223372036854775807]"),
    ],
)
def test_bad_input_is_a_clear_error_and_exit_2(model_dir, tmp_path, capsys, flags, message):
    argv = ["a red circle", "--model", str(model_dir), "--out", str(tmp_path / "x.png"), *flags]
    assert run(*argv) == 2
    assert message in capsys.readouterr().err


def test_corrupted_or_pickled_weights_are_refused(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    weights = bad / "unet" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    assert run("a red circle", "--model", str(bad), "--out", str(tmp_path / "x.png")) == 2
    assert "model.safetensors" in capsys.readouterr().err
    torch.save({"w": torch.zeros(2)}, weights)  # a pickle where safetensors belongs
    assert run("a red circle", "--model", str(bad), "--out", str(tmp_path / "x.png")) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_console_script_reports_errors_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "t2i", "generate", "x", "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "not a t2i model folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bf16_flag_writes_an_image_close_to_fp32(model_dir, tmp_path):
    import numpy as np

    paths = {key: tmp_path / f"{key}.png" for key in ("fp32", "bf16")}
    base = ["a red circle", "--model", str(model_dir), "--seed", "3"]
    assert run(*base, "--out", str(paths["fp32"])) == 0
    assert run(*base, "--bf16", "--out", str(paths["bf16"])) == 0
    a, b = (np.asarray(Image.open(p), dtype=np.int16) for p in paths.values())
    assert (a != b).any()  # the flag reached the pipeline
    assert np.abs(a - b).mean() < 3  # of 255: an untrained net; BENCHMARKS.md has a trained one
