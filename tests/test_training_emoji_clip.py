"""The emoji CLIP recipe (t2i train emoji_clip) on a small emoji set rendered here by the emoji
builder: the loss falls, retrieval on the training images beats chance, the card is written, and
its preset is the shipped extractor's configuration."""

from __future__ import annotations

import dataclasses
import json
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from tiny_models import write_small_emoji_set

from t2i.cli import main as t2i_main
from t2i.evaluation.emoji_clip import BUNDLED_DIR, load_emoji_clip, read_card
from t2i.training import emoji_clip as recipe
from t2i.training import state
from t2i.training.loop import train


@pytest.fixture(scope="module")
def emoji32(tmp_path_factory) -> Path:
    """~200 real 32 px emoji of every installed style (about a second to render)."""
    return write_small_emoji_set(tmp_path_factory.mktemp("emoji32"), 32, 25, 0.15)


def test_tiny_run_learns_and_retrieves_its_training_images(emoji32, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "emoji_clip", "--data", str(emoji32), "--preset", "tiny", "--no-progress"]
    args += ["--out", str(run), "--cache_dir", str(tmp_path / "cache")]
    assert t2i_main(args) == 0 and "card in" in capsys.readouterr().out
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    losses = [rec["loss"] for rec in log if "loss" in rec]
    assert losses[-1] < 0.5 * losses[0]  # ln 32 = 3.47 at the start; ~0.8 after 40 steps
    card = read_card(run / "model")
    train = card["train_subset"]
    pool = next(int(k.rsplit("_", 1)[1]) for k in train if k.startswith("r_precision_top1"))
    assert pool >= 50 and train[f"r_precision_top1_of_{pool}"] > 10 / pool  # 10x chance
    assert train["clip_score_matched"] > train["clip_score_shuffled"]
    assert card["heldout"]["n"] > 0 and card["preset"] == "tiny"
    assert card["training"]["steps"] == 40
    clip = load_emoji_clip(run / "model")
    assert clip.encode_image(torch.zeros(2, 3, 16, 16)).shape == (2, 64)


def test_weight_decay_falls_on_matrices_only(emoji32, tmp_path):
    cfg = recipe.preset("tiny")
    cfg.loop.steps = 1
    args = Namespace(data=str(emoji32), preset="tiny", overrides=[])
    cfg.cache_dir = str(tmp_path / "cache")
    built = recipe.build(cfg, args)
    names = {n for n, p in built.model.named_parameters() if built.decays(n, p)}
    assert names and all(built.model.get_parameter(n).ndim > 1 for n in names)
    assert any(p.ndim == 1 for p in built.model.parameters())  # biases, norms: no decay
    train(built, cfg.loop, cfg.optim, tmp_path / "run", progress=False)
    _, meta = state.load_checkpoint(state.latest_checkpoint(tmp_path / "run" / "checkpoints"))
    groups = meta["optimizer"]["param_groups"]
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [
        (len(names), cfg.optim.weight_decay),
        (sum(1 for _ in built.model.parameters()) - len(names), 0.0),
    ]


def test_shipped_preset_is_the_shipped_network_and_its_card_names_it():
    card = read_card()
    cfg = recipe.preset(card["preset"])
    shipped = json.loads((BUNDLED_DIR / "config.json").read_text())
    shipped.pop("type")
    assert json.loads(json.dumps(dataclasses.asdict(cfg.model))) == shipped
    old = card["train_config"]  # the loop the preset replaced
    assert cfg.loop.batch_size == old["batch_size"] and cfg.optim.lr == old["lr"]
    assert cfg.optim.weight_decay == old["weight_decay"]
    assert cfg.loop.steps == old["epochs"] * (27_821 // old["batch_size"])
    assert "--preset emoji_clip" in card["command"]


def test_bad_settings_fail_before_work(emoji32):
    cfg = recipe.preset("tiny")
    cfg.data_size = 24
    args = Namespace(data=str(emoji32), preset="tiny", overrides=[])
    with pytest.raises(ValueError, match="multiple of 16"):
        recipe.build(cfg, args)
    with pytest.raises(ValueError, match="emoji_clip"):
        recipe.preset("emoji")
