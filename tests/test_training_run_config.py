"""Where a run's configuration comes from (t2i/training/run_config.py): --config FILE, the run
folder's config.json as the truth on --resume, --init NAME|DIR adopting the model, greyscale
folders for greyscale models, and caption words the text encoder cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import LETTER_BACKGROUNDS, write_letters_folder

from t2i.checkpoint import BUNDLED_DIR
from t2i.cli import main
from t2i.models.unet import UNetConfig

TINY = ["--preset", "tiny", "--no-progress", "--loop.sample_every", "0"]


def train(*args: str) -> int:
    return main(["train", "diffusion", *args])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert train("--data", "shapes", *TINY, "--loop.steps", "2", "--out", str(out)) == 0
    return out


def test_resume_keeps_the_runs_config_and_refuses_a_conflicting_flag(finished_run, capsys):
    config = (finished_run / "config.json").read_bytes()
    # no flag repeated: preset and data come from the run, nothing is overwritten
    assert train("--out", str(finished_run), "--resume", "--no-progress") == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert (finished_run / "config.json").read_bytes() == config
    for flag, text in [
        (["--loop.steps", "5"], "--loop.steps 5 conflicts with the run's loop.steps = 2"),
        (["--optim.lr", "0.5"], "--optim.lr 0.5 conflicts with the run's optim.lr = 0.001"),
        (["--data", "fashion"], "--data fashion conflicts with the run's data 'shapes'"),
        (["--preset", "default"], "--preset default conflicts with the run's preset 'tiny'"),
    ]:
        assert train("--out", str(finished_run), "--resume", *flag) == 2
        assert text in capsys.readouterr().err
    assert (finished_run / "config.json").read_bytes() == config
    # a flag that agrees with the run is fine
    assert train("--out", str(finished_run), "--resume", "--loop.steps", "2") == 0


def test_config_file_sits_between_the_preset_and_the_flags(tmp_path, capsys):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"optim": {"lr": 0.005}, "loop": {"steps": 7}, "image_size": 16}))
    argv = ["--preset", "tiny", "--config", str(path), "--loop.steps", "9", "--show-config"]
    assert train(*argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["optim"]["lr"] == 0.005 and shown["loop"]["steps"] == 9
    path.write_text(json.dumps({"optim": {"learning_rate": 0.005}}))
    assert train("--preset", "tiny", "--config", str(path), "--show-config") == 2
    err = capsys.readouterr().err
    assert f"--config {path}: unknown config key 'optim.learning_rate'" in err
    path.write_text(json.dumps({"loop": {"steps": "many"}}))
    assert train("--preset", "tiny", "--config", str(path), "--show-config") == 2
    assert "bad value 'many' for loop.steps" in capsys.readouterr().err


def test_a_runs_config_json_reproduces_it(finished_run, tmp_path, capsys):
    assert train("--config", str(finished_run / "config.json"), "--show-config") == 0
    shown = json.loads(capsys.readouterr().out)
    recorded = json.loads((finished_run / "config.json").read_text())
    assert shown["model"] == recorded["model"] and shown["loop"] == recorded["loop"]


@pytest.fixture(scope="module")
def letters(tmp_path_factory) -> Path:
    return write_letters_folder(tmp_path_factory.mktemp("letters") / "data", count=8)


def test_init_by_name_adopts_the_bundled_model(letters, tmp_path, capsys):
    out = tmp_path / "tuned"
    argv = ["--init", "shapes", "--data", str(letters), "--out", str(out), "--no-progress"]
    small = ["--loop.steps", "1", "--loop.batch_size", "2", "--loop.sample_every", "0"]
    assert train(*argv, *small, "--cache_dir", str(tmp_path / "cache")) == 0
    err = capsys.readouterr().err
    # shapes reads 40-odd words: its trained encoder learns the letters' own, and says so
    assert "learns 6 new word(s) of the captions ('letter', 'o'" in err, err
    config = json.loads((out / "config.json").read_text())
    bundled = json.loads((BUNDLED_DIR / "shapes" / "unet" / "config.json").read_text())
    bundled.pop("type", None)
    assert UNetConfig(**config["model"]) == UNetConfig(**bundled)
    assert config["text_encoder"] == "trained" and config["parameterisation"] == "x0"
    assert config["text_model"]["vocab"][-6] == "letter"
    assert config["autoencoder"]["path"].endswith("bundled/shapes")


def test_a_greyscale_model_trains_on_a_folder_in_grey(letters, tmp_path):
    out = tmp_path / "grey"
    argv = ["--init", "fashion", "--data", str(letters), "--out", str(out), "--no-progress"]
    assert train(*argv, "--loop.steps", "1", "--loop.batch_size", "2") == 0
    import t2i

    image = t2i.load(out / "model")("a red letter K", steps=2)[0]
    assert image.mode == "L" and image.size == (32, 32)


def test_generate_warns_of_words_the_model_cannot_read(tmp_path, capsys):
    out = tmp_path / "x.png"
    prompt = "a minuscule turquoise circle above a blue square"
    assert main(["generate", prompt, "--steps", "2", "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "shapes cannot read 'minuscule', 'turquoise'" in err
    assert main(["generate", "a red circle", "--steps", "2", "--quiet", "--out", str(out)]) == 0
    assert "cannot read" not in capsys.readouterr().err
    assert np.asarray(Image.open(out)).std() > 0


def background_share(image) -> float:
    """The share of an image's pixels within 40 levels (every channel) of one of the letters
    folder's two backgrounds (the larger of the two)."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    near = [np.abs(rgb - np.array(c)).max(-1) <= 40 for c in LETTER_BACKGROUNDS.values()]
    return max(float(m.mean()) for m in near)


@pytest.mark.slow
def test_the_quick_preset_learns_a_small_folder(tmp_path):
    """200 steps of `quick` (about a minute) on 64 letter images already draw the folder's flat
    backgrounds, far from noise. Measure: the share of pixels in one of the two background
    colours is at least 0.6 in every image (pure noise: under 0.05)."""
    import t2i
    from t2i.images import to_pil

    data = write_letters_folder(tmp_path / "letters", count=64)
    out = tmp_path / "quick"
    steps = ["--loop.steps", "200", "--loop.sample_every", "0", "--loop.ckpt_every", "0"]
    assert train("--preset", "quick", "--data", str(data), "--out", str(out), *steps) == 0
    pipe = t2i.load(out / "model")
    noise = to_pil(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert max(background_share(image) for image in noise) < 0.05
    for background in ("black", "white"):
        for thing in ("red letter K", "green letter A"):
            for image in pipe(f"a {thing} on a {background} background", n=2, seed=0):
                assert background_share(image) >= 0.6, (thing, background)


def test_help_lists_presets_and_every_key_with_its_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "diffusion", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "  quick " in out and "--config FILE" in out
    assert "optim.lr = 0.0002" in out and "peak learning rate of AdamW" in out
    assert 'parameterisation = "v"' in out and "loop.steps = 10000" in out
