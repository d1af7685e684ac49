"""Issue 39's training faults on the toy recipe: --resume with nothing to resume, a torn last log
line, a truncated newest checkpoint, and the exit status of an interrupted run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from test_training_loop import configs, toy_recipe

from t2i.cli import main as t2i_main
from t2i.training import state
from t2i.training.cli import EXIT_INTERRUPTED, report
from t2i.training.loop import train
from t2i.training.presets import Stage, run_stages


def test_resume_without_a_checkpoint_is_an_error_naming_the_folder(tmp_path):
    """It silently started from step 0."""
    loop, optim = configs(2)
    with pytest.raises(ValueError, match=f"--resume: no checkpoint in {tmp_path / 'checkpoints'}"):
        train(toy_recipe(), loop, optim, tmp_path, resume=True, progress=False)
    assert not (tmp_path / "log.jsonl").exists()
    argv = ["train", "diffusion", "--data", "shapes", "--preset", "tiny", "--no-progress"]
    assert t2i_main([*argv, "--out", str(tmp_path / "typo"), "--resume"]) == 2


def test_stages_not_yet_begun_start_fresh_under_resume(tmp_path):
    """A shipped preset's --resume continues a begun run; its later stages start from 0, but
    an --out where nothing began is the loop's error (resume passed through)."""
    stages = (Stage("a", "diffusion", "tiny", "shapes"), Stage("b", "diffusion", "tiny", "shapes"))
    seen = []

    def train_stage(stage, run_dir: Path, flags: dict) -> dict:
        seen.append((stage.name, flags["resume"]))
        first = not (run_dir / "checkpoints").exists()
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        return {"status": "interrupted" if first and stage.name == "a" else "done"}

    run_stages("two", stages, tmp_path, None, True, train_stage)
    assert seen == [("a", True)]  # nothing begun: the first stage is asked to resume (an error)
    run_stages("two", stages, tmp_path, None, True, train_stage)
    assert seen[1:] == [("a", True), ("b", False)]


def test_torn_last_log_line_is_dropped_on_resume(tmp_path):
    """A kill mid-write leaves half a line; resume blocked on it without naming the log."""
    loop, optim = configs(4, ckpt_every=2)
    train(toy_recipe(), loop, optim, tmp_path, progress=False)
    log = tmp_path / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 5, "lo')
    loop.steps = 6
    with pytest.warns(UserWarning, match="log.jsonl: dropped its torn last line"):
        assert train(toy_recipe(), loop, optim, tmp_path, resume=True, progress=False)["step"] == 6
    steps = [json.loads(ln)["step"] for ln in log.read_text().splitlines()]
    assert steps.count(5) == 1 and steps[-1] == 6
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')  # damage inside: named, not guessed
    with pytest.raises(ValueError, match=r"log.jsonl, line 2: not a log record"):
        train(toy_recipe(), loop, optim, tmp_path, resume=True, progress=False)


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    """A traceback with no fallback before; now the previous one loads, the skip is logged."""
    loop, optim = configs(4, ckpt_every=2)
    train(toy_recipe(), loop, optim, tmp_path / "a", progress=False)
    run = tmp_path / "b"
    loop.steps = 2
    train(toy_recipe(), loop, optim, run, progress=False)
    loop.steps = 4
    train(toy_recipe(), loop, optim, run, resume=True, progress=False)
    newest = run / "checkpoints" / "ckpt-000004" / state.TENSORS
    newest.write_bytes(newest.read_bytes()[:500])  # truncated
    with pytest.warns(UserWarning, match="skipping checkpoint .*ckpt-000004"):
        out = train(toy_recipe(), loop, optim, run, resume=True, progress=False)
    assert out["status"] == "done" and out["step"] == 4  # steps 3-4 redone from ckpt-000002
    a, b = (
        state.load_checkpoint(r / "checkpoints" / "ckpt-000004")[0] for r in (tmp_path / "a", run)
    )
    assert all(torch.equal(a[k], b[k]) for k in a if k != "rng.torch")
    events = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    skipped = [e for e in events if e.get("event") == "checkpoint_skipped"]
    assert len(skipped) == 1 and "ckpt-000004" in skipped[0]["reason"]


def test_no_loadable_checkpoint_is_a_clear_error(tmp_path):
    loop, optim = configs(4, ckpt_every=2)
    train(toy_recipe(), loop, optim, tmp_path, progress=False)
    for ckpt in (tmp_path / "checkpoints").glob("ckpt-*"):
        (ckpt / state.META).write_text('{"step": 2, "rng')  # torn JSON
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no checkpoint in .* loads"):
        train(toy_recipe(), loop, optim, tmp_path, resume=True, progress=False)


def test_interrupted_run_exits_4_not_0(tmp_path, capsys):
    """An interrupted run exited 0 like a finished one."""
    loop, optim = configs(12, ckpt_every=4)
    out = train(
        toy_recipe(signal_at=3, signum=signal.SIGTERM), loop, optim, tmp_path, progress=False
    )
    assert out["status"] == "interrupted"
    assert report(out, tmp_path) == EXIT_INTERRUPTED == 4
    assert "continue with --resume" in capsys.readouterr().out
    assert report({"status": "done", "step": 12}, tmp_path) == 0
    assert report({"status": "diverged"}, tmp_path) == 3
