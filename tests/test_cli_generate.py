"""`t2i generate` end to end on a tiny model folder: files, parameters, reproduction, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tiny_models import png_header_only, write_tiny_model

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


def test_cads_is_recorded_and_reproduced_from_the_png(model_dir, tmp_path):
    plain, varied = tmp_path / "plain.png", tmp_path / "varied.png"
    argv = ["a red circle", "--model", str(model_dir), "--guidance", "4"]
    assert run(*argv, "--out", str(plain)) == 0
    assert run(*argv, "--cads-noise", "1", "--cads-interval", "0.5,50", "--out", str(varied)) == 0
    params = read_png_params(varied)
    assert (params.cads_noise, params.cads_interval) == (1.0, [0.5, 50.0])
    assert Image.open(plain).tobytes() != Image.open(varied).tobytes()
    again = tmp_path / "again.png"
    assert run("--from", str(varied), "--out", str(again)) == 0
    assert Image.open(again).tobytes() == Image.open(varied).tobytes()


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
        (["--cads-noise", "-1"], "cads_noise must be a number in [0, 10] (0: off), got -1.0"),
        (["--cads-noise", "1", "--cads-interval", "all"], "cads_interval must be two sigmas"),
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


def test_out_that_is_a_folder_fails_before_sampling(model_dir, tmp_path, capsys):
    """Issue 39: `--out DIR` (or a folder named like the file, or like one of --n's files)
    failed only after sampling; now before, naming the folder, with nothing written."""
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "img-5.png").mkdir()
    cases = [
        ([str(tmp_path)], "is a folder"),
        ([str(tmp_path / "dir.png")], "is a folder"),
        ([str(tmp_path / "img.png"), "--n", "2", "--seed", "4"], "a folder of that name"),
    ]
    for out, message in cases:
        assert run("a red circle", "--model", str(model_dir), "--out", *out) == 2
        assert message in capsys.readouterr().err, out
    assert not (tmp_path / "img-4.png").exists()


def _png_with_params(path, text: str, zip: bool = False):
    info = PngInfo()
    info.add_text("t2i", text, zip=zip)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    "text, zip, message",
    [
        ("[" * 100_000 + "]" * 100_000, False, "parameters are 200000 characters; at most"),
        ("[" * 40_000 + "]" * 40_000, False, "parameters are not valid JSON"),  # recursion
        ('{"prompt": "' + "x" * 2_000_000 + '"}', False, "at most 100000"),
        ('{"prompt": "' + "x" * 20_000_000 + '"}', True, "Decompressed data too large"),
        ('{"prompt": "a", "steps": "3"}', False, "steps must be an integer, got '3'"),
        ('{"prompt": "a", "guidance": NaN}', False, "guidance must be a finite number"),
        ('{"prompt": ["a"]}', False, "prompt must be a string"),
        ('{"prompt": "a", "guidance_interval": [1]}', False, "null or [lo, hi]"),
    ],
)
def test_hostile_from_png_is_one_line_and_exit_2(tmp_path, capsys, text, zip, message):
    """Issue 39: a `--from` PNG whose t2i chunk is JSON nested 100k deep ended in a traceback;
    huge, compressed-bomb or mistyped parameters are one line naming the file, exit 2."""
    png = _png_with_params(tmp_path / "hostile.png", text, zip)
    assert run("--from", str(png), "--out", str(tmp_path / "x.png")) == 2
    err = capsys.readouterr().err
    assert message in err and str(png) in err
    assert len(err.strip().splitlines()) == 1 and len(err) < 600


def test_decompression_bomb_init_exits_2_without_decoding(model_dir, tmp_path):
    """Issue 39: `--init` of a PNG whose header says 13000x13000 over a few bytes is refused by
    its header: exit 2, a message with its size, no traceback (in a real process)."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(13000, 13000))
    argv = ["a red circle", "--model", str(model_dir), "--init", str(bomb)]
    proc = subprocess.run(
        [sys.executable, "-m", "t2i", "generate", *argv, "--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "13000x13000" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("prompt", ["a (red:1e30) circle", "a (red:100) circle", "((red:5):3)"])
def test_huge_prompt_weight_is_refused_not_a_black_image(model_dir, tmp_path, capsys, prompt):
    """Issue 39: (red:1e30) gave a black image and exit 0; weights are bounded to [-10, 10]."""
    assert run(prompt, "--model", str(model_dir), "--out", str(tmp_path / "x.png")) == 2
    assert "prompt weight" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


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
