"""The classifier recipe (t2i train classifier): it learns, resumes exactly through the loop, its
folder loads for evaluation, and its preset is the shipped extractor's configuration."""

from __future__ import annotations

import dataclasses
import json
from argparse import Namespace

import pytest
import torch
from resume_check import assert_resume_repeats

from t2i.cli import main as t2i_main
from t2i.evaluation.classifier import BUNDLED_DIR, load_classifier, read_card
from t2i.training import classifier as recipe
from t2i.training.loop import StepRNG, train


def _train(tmp_path, name: str, resume: bool = False, **loop) -> dict:
    cfg = recipe.preset("tiny")
    cfg.loop = dataclasses.replace(cfg.loop, **loop)
    args = Namespace(data="fashion", preset="tiny", overrides=[])
    return train(recipe.build(cfg, args), cfg.loop, cfg.optim, tmp_path / name, resume, False)


def test_tiny_run_learns_and_its_folder_loads(tmp_path, capsys):
    code = t2i_main(
        ["train", "classifier", "--data", "fashion", "--preset", "tiny"]
        + ["--out", str(tmp_path / "run"), "--no-progress"]
    )
    assert code == 0 and "card in" in capsys.readouterr().out
    log = [json.loads(ln) for ln in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [rec["loss"] for rec in log if "loss" in rec]
    assert losses[-1] < losses[0] - 0.2  # ln 10 = 2.30 at the start
    card = read_card(tmp_path / "run" / "model")
    assert card["test_accuracy"] > 0.4  # chance is 0.1; 60 tiny steps reach ~0.59
    assert card["preset"] == "tiny" and card["training"]["steps"] == 60
    clf = load_classifier(tmp_path / "run" / "model")
    assert clf(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_resume_from_a_checkpoint_repeats_the_straight_run(tmp_path):
    assert_resume_repeats(_train, tmp_path, steps=12, every=4)


def test_augment_flips_and_shifts_with_the_step_generator():
    cfg = recipe.preset("tiny")
    x = torch.randn(64, 1, 32, 32)
    a = recipe.augment(x, cfg, StepRNG(0, 5, 0, 64, 0, 64))
    b = recipe.augment(x, cfg, StepRNG(0, 5, 0, 64, 0, 64))
    assert torch.equal(a, b) and not torch.equal(a, x)
    flipped = recipe.augment(x, dataclasses.replace(cfg, shift=0), StepRNG(0, 5, 0, 64, 0, 64))
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and 10 < mirrored.sum() < 54


def test_shipped_preset_is_the_shipped_network_and_its_card_names_it():
    cfg = recipe.preset(read_card()["preset"])
    shipped = json.loads((BUNDLED_DIR / "config.json").read_text())["config"]
    assert json.loads(json.dumps(dataclasses.asdict(cfg.model))) == shipped
    old = read_card()["train_config"]  # the loop the preset replaced
    assert cfg.loop.batch_size == old["batch_size"] and cfg.optim.lr == old["lr"]
    assert cfg.optim.weight_decay == old["weight_decay"]
    assert cfg.loop.steps == old["epochs"] * (60_000 // old["batch_size"])
    assert cfg.label_smoothing == old["label_smoothing"] and cfg.shift == old["shift"]
    assert "--preset fashion_classifier" in read_card()["command"]


def test_unlabelled_data_and_bad_presets_fail_early():
    with pytest.raises(ValueError, match="labelled"):
        recipe.build(recipe.preset("tiny"), Namespace(data="shapes", preset="tiny", overrides=[]))
    with pytest.raises(ValueError, match="fashion_classifier"):
        recipe.preset("fashion")
