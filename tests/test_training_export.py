"""`t2i export`: a run's newest checkpoint (EMA) becomes an fp16 model folder the pipeline loads."""

from __future__ import annotations

import json

import torch

from t2i.checkpoint import read_safetensors
from t2i.cli import main
from t2i.pipeline import Pipeline
from t2i.training import state


def test_export_of_a_run_gives_the_ema_weights_in_fp16_with_a_data_card(tmp_path):
    run, out = tmp_path / "run", tmp_path / "model"
    argv = ["train", "diffusion", "--data", "shapes", "--preset", "tiny", "--out", str(run)]
    assert main([*argv, "--no-progress", "--loop.sample_every", "0"]) == 0
    assert main(["export", str(run), "--out", str(out)]) == 0

    tensors, meta = state.load_checkpoint(state.latest_checkpoint(run / "checkpoints"))
    exported = read_safetensors(out / "unet" / "model.safetensors")
    assert all(v.dtype == torch.float16 for v in exported.values())
    for name, value in exported.items():
        assert torch.equal(value, tensors[f"ema.{name}"].to(torch.float16)), name
    index = json.loads((out / "model_index.json").read_text())
    assert index["data"]["source"] == "shapes"
    assert index["training"]["steps"] == meta["step"] == 8
    assert index["training"]["images_seen"] == meta["samples_seen"]

    pipe = Pipeline.from_pretrained(out)
    images = pipe("a red circle", steps=2, seed=0)
    assert images[0].size == (16, 16)


def test_export_of_a_step_gives_that_checkpoint_and_names_the_kept_steps_when_absent(
    tmp_path, capsys
):
    run, out = tmp_path / "run", tmp_path / "model"
    argv = ["train", "diffusion", "--data", "shapes", "--preset", "tiny", "--out", str(run)]
    keep = ["--loop.ckpt_every", "4", "--loop.keep_ckpts", "3", "--loop.sample_every", "0"]
    assert main([*argv, *keep, "--no-progress"]) == 0
    assert main(["export", str(run), "--out", str(out), "--step", "4"]) == 0

    tensors, _ = state.load_checkpoint(run / "checkpoints" / "ckpt-000004")
    newest, _ = state.load_checkpoint(run / "checkpoints" / "ckpt-000008")
    exported = read_safetensors(out / "unet" / "model.safetensors")
    for name, value in exported.items():
        assert torch.equal(value, tensors[f"ema.{name}"].to(torch.float16)), name
    assert any(not torch.equal(tensors[k], newest[k]) for k in tensors if k.startswith("ema."))
    index = json.loads((out / "model_index.json").read_text())
    assert index["training"]["steps"] == 4

    assert main(["export", str(run), "--out", str(tmp_path / "m"), "--step", "5"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint of step 5" in err and "steps kept: 4, 8" in err
    assert not (tmp_path / "m").exists()


def test_export_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_training_card_adds_up_the_wall_time_of_resumed_segments(tmp_path):
    """Each resume restarts the run's clock: the card sums the segments, not their maximum."""
    from t2i.training.export import training_card

    rows = [{"step": s, "elapsed_s": e} for s, e in [(10, 5.0), (20, 9.0), (30, 14.0)]]
    rows += [{"step": 20, "event": "resumed"}]  # no clock: ignored
    rows += [{"step": s, "elapsed_s": e} for s, e in [(30, 4.0), (40, 8.0)]]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    card = training_card(tmp_path, {"step": 40, "samples_seen": 320})
    assert card["wall_time_s"] == 22.0 and card["wall_time_s_last_segment"] == 8.0
    assert card["segments"] == 2 and card["steps"] == 40 and card["images_seen"] == 320


def test_an_autoencoder_adopted_from_a_model_folder_carries_that_folders_autoencoder_card(
    tmp_path,
):
    """A fine-tune's autoencoder is its --init model folder: the exported card must describe
    the autoencoder (the folder card's `autoencoder` entry), not the whole model it came from."""
    from t2i.training.export import autoencoder_card

    own = {"data": {"source": "none: a fixed resize + patch map"}}
    model = tmp_path / "model"
    model.mkdir()
    card = {"data": {"source": "shapes:crowded"}, "training": {"steps": 6000}, "autoencoder": own}
    (model / "model_index.json").write_text(json.dumps(card))
    assert autoencoder_card(model) == own
    alone = tmp_path / "ae"  # an autoencoder run's own folder: its card is the autoencoder's
    alone.mkdir()
    (alone / "model_index.json").write_text(json.dumps({"training": {"steps": 3}, "x": 1}))
    assert autoencoder_card(alone) == {"training": {"steps": 3}}
