"""The training loop on a toy model: exact resume, signals, NaN, checkpoints, config overrides."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import IterableDataset

from t2i.training import state
from t2i.training.config import LoopConfig, OptimConfig, apply_overrides, parse_dotted_args
from t2i.training.loop import (
    Recipe,
    TrainingDiverged,
    check_configs,
    data_indices,
    lr_at,
    seed_everything,
    train,
)


class Stream(IterableDataset):
    """A stream that reshuffles per epoch, like the tar-shard reader."""

    def __init__(self, data):
        self.data, self.epoch = data, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(self.epoch))
        return (self.data[i] for i in order.tolist())


def toy_recipe(
    seed: int = 0,
    nan_at: int | None = None,
    signal_at: int | None = None,
    signum: int = signal.SIGINT,
    stream: bool = False,
) -> Recipe:
    """Regress noisy targets with a tiny MLP; uses the step RNG (noise, dropout mask)."""
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 4))
    data = [torch.randn(4) for _ in range(37)]  # 37: epochs end mid-batch
    calls = {"n": 0}

    def loss(batch, rng):
        calls["n"] += 1
        if signal_at is not None and calls["n"] == signal_at:
            signal.raise_signal(signum)
        noise = rng.randn(4)
        keep = (rng.rand() > 0.1).float()[:, None]  # stands for caption dropout
        out = model(batch * keep + 0.1 * noise)
        value = ((out - batch) ** 2).mean()
        if nan_at is not None and calls["n"] >= nan_at:
            value = value * float("nan")
        return value

    return Recipe("toy", model, Stream(data) if stream else data, torch.stack, loss)


def configs(steps: int, **loop_kw) -> tuple[LoopConfig, OptimConfig]:
    loop = LoopConfig(steps=steps, batch_size=8, seed=3, log_every=1, sample_every=0, **loop_kw)
    return loop, OptimConfig(lr=1e-2, warmup_steps=2)


def weights(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = state.load_checkpoint(state.latest_checkpoint(path / "checkpoints"))
    return tensors


@pytest.mark.parametrize(
    "signum, stream", [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)]
)
def test_signal_then_resume_is_bit_exact(tmp_path, signum, stream):
    loop, optim = configs(12, grad_accum=2, ckpt_every=4)
    train(toy_recipe(stream=stream), loop, optim, tmp_path / "a", progress=False)
    interrupted = toy_recipe(signal_at=9, signum=signum, stream=stream)
    before = signal.getsignal(signum)
    out = train(interrupted, loop, optim, tmp_path / "b", progress=False)
    assert out["status"] == "interrupted" and out["step"] == 5  # 2 micro-batches per step
    assert signal.getsignal(signum) is before  # the loop's handler is gone again
    resumed = toy_recipe(stream=stream)
    out = train(resumed, loop, optim, tmp_path / "b", resume=True, progress=False)
    assert out["status"] == "done" and out["step"] == 12
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        if key != "rng.torch":
            assert torch.equal(a[key], b[key]), key
    log = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(ln)["step"] for ln in log]
    assert steps.count(6) == 1  # the resumed log continues without duplicates


def test_resume_differs_from_a_fresh_start(tmp_path):
    loop, optim = configs(6, ckpt_every=3)
    train(toy_recipe(), loop, optim, tmp_path / "a", progress=False)
    loop2, _ = configs(6, ckpt_every=3)
    loop2.seed = 4
    train(toy_recipe(), loop2, optim, tmp_path / "b", progress=False)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert not torch.equal(a["model.0.weight"], b["model.0.weight"])  # the seed matters


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    loop, optim = configs(10, ckpt_every=2)
    with pytest.raises(TrainingDiverged, match="step 5"):
        train(toy_recipe(nan_at=5), loop, optim, tmp_path, progress=False)
    last = state.latest_checkpoint(tmp_path / "checkpoints")
    assert last.name == "ckpt-000004"
    tensors, meta = state.load_checkpoint(last)
    assert meta["step"] == 4 and all(torch.isfinite(t.float()).all() for t in tensors.values())


def test_keeps_last_k_and_refuses_to_overwrite(tmp_path):
    loop, optim = configs(6, ckpt_every=1, keep_ckpts=2)
    train(toy_recipe(), loop, optim, tmp_path, progress=False)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt-000005", "ckpt-000006", "latest"]
    with pytest.raises(ValueError, match="--resume"):
        train(toy_recipe(), loop, optim, tmp_path, progress=False)
    loop.batch_size = 4
    with pytest.raises(ValueError, match="loop.batch_size=8, not 4"):
        train(toy_recipe(), loop, optim, tmp_path, resume=True, progress=False)


def test_half_written_checkpoint_is_ignored(tmp_path):
    loop, optim = configs(4, ckpt_every=2)
    train(toy_recipe(), loop, optim, tmp_path, progress=False)
    ck = tmp_path / "checkpoints"
    (ck / "ckpt-000008.tmp").mkdir()  # what a writer killed mid-way leaves
    (ck / "ckpt-000008.tmp" / state.TENSORS).write_bytes(b"garbage")
    assert state.latest_checkpoint(ck).name == "ckpt-000004"
    (ck / "latest").write_text("ckpt-000099\n")  # a stale pointer falls back to the newest
    assert state.latest_checkpoint(ck).name == "ckpt-000004"


def test_data_order_is_a_permutation_per_epoch():
    first = data_indices(10, seed=1, start=0, count=10)
    assert sorted(first) == list(range(10))
    assert data_indices(10, 1, 3, 12) == (first + data_indices(10, 1, 10, 10))[3:15]
    assert data_indices(10, 1, 10, 10) != first


def test_lr_schedule():
    optim = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(optim, 0, 100) == pytest.approx(0.1)
    assert lr_at(optim, 10, 100) == pytest.approx(1.0)
    assert lr_at(optim, 100, 100) == pytest.approx(0.1)
    optim.schedule = "constant"
    assert lr_at(optim, 99, 100) == 1.0


def test_a_run_stopped_early_on_a_longer_cosine_is_that_runs_checkpoint(tmp_path):
    """optim.decay_steps: a stage that ships step 4 of an 8-step schedule reproduces it."""
    from t2i.cli import main

    argv = ["train", "diffusion", "--data", "shapes", "--preset", "tiny", "--no-progress"]
    keep = ["--loop.ckpt_every", "4", "--loop.keep_ckpts", "3", "--loop.sample_every", "0"]
    assert main([*argv, *keep, "--out", str(tmp_path / "long")]) == 0
    short = ["--loop.steps", "4", "--optim.decay_steps", "8", "--out", str(tmp_path / "short")]
    assert main([*argv, *keep, *short]) == 0
    a, _ = state.load_checkpoint(tmp_path / "long" / "checkpoints" / "ckpt-000004")
    b, _ = state.load_checkpoint(tmp_path / "short" / "checkpoints" / "ckpt-000004")
    weights = [k for k in a if k.startswith(("model.", "ema."))]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)
    # without the longer cosine the same 4 steps decay faster, to other weights
    assert main([*argv, *keep, "--loop.steps", "4", "--out", str(tmp_path / "own")]) == 0
    c, _ = state.load_checkpoint(tmp_path / "own" / "checkpoints" / "ckpt-000004")
    assert any(not torch.equal(a[k], c[k]) for k in weights)
    with pytest.raises(ValueError, match="decay_steps -1"):
        check_configs(LoopConfig(), OptimConfig(decay_steps=-1), 1)


def test_overrides_convert_and_reject():
    loop = LoopConfig()
    apply_overrides(loop, parse_dotted_args(["--steps", "1e3", "--bf16=true"]))
    assert loop.steps == 1000 and loop.bf16 is True
    optim = OptimConfig()
    apply_overrides(optim, {"betas": "0.8,0.99"})
    assert optim.betas == (0.8, 0.99)
    with pytest.raises(ValueError, match="valid keys.*'lr'"):
        apply_overrides(optim, {"learning_rate": "1"})
    with pytest.raises(ValueError, match="bad value 'abc'"):
        apply_overrides(optim, {"lr": "abc"})
    with pytest.raises(ValueError, match="unexpected argument"):
        parse_dotted_args(["lr", "1"])


def test_list_overrides_take_json_for_items_with_commas():
    from t2i.training.diffusion import DiffusionRecipeConfig

    cfg = DiffusionRecipeConfig()
    apply_overrides(cfg, {"sample_prompts": '["fox emoji, noto style", "sun"]'})
    assert cfg.sample_prompts == ("fox emoji, noto style", "sun")
    apply_overrides(cfg, {"sample_prompts": "a fox,a sun"})
    assert cfg.sample_prompts == ("a fox", "a sun")
    with pytest.raises(ValueError, match="bad value.*sample_prompts.*not a JSON list"):
        apply_overrides(cfg, {"sample_prompts": '["unclosed'})


def test_bad_batch_split_is_rejected_before_work(tmp_path):
    loop, optim = configs(4, grad_accum=3)
    with pytest.raises(ValueError, match="batch_size 8"):
        train(toy_recipe(), loop, optim, tmp_path, progress=False)
    assert not (tmp_path / "checkpoints").exists()


def test_lr_scale_parts_and_probe(tmp_path):
    """A recipe's lr_scale multiplies the schedule's lr per parameter (Adam's first step moves
    each weight by about lr x scale), its parts are averaged into each log line, and its probe
    is logged at each sample grid; resume keeps the scaled groups."""
    recipe = toy_recipe()
    start = {n: p.detach().clone() for n, p in recipe.model.named_parameters()}
    recipe.lr_scale = lambda name: 4.0 if name.startswith("2.") else 1.0
    recipe.parts = lambda: {"half": 0.5}
    recipe.sample = lambda model: Image.new("RGB", (4, 4))
    recipe.probe = lambda model: {"norm": model[0].weight.norm().item()}
    loop = LoopConfig(steps=1, batch_size=8, seed=3, log_every=1, sample_every=1)
    optim = OptimConfig(lr=1e-3, warmup_steps=0, weight_decay=0.0, ema_decay=0.0)
    train(recipe, loop, optim, tmp_path, progress=False)
    moved = {
        n: (p.detach() - start[n]).abs().median().item() for n, p in recipe.model.named_parameters()
    }
    assert moved["0.weight"] == pytest.approx(1e-3, rel=0.05)
    assert moved["2.weight"] == pytest.approx(4e-3, rel=0.05)
    records = [json.loads(ln) for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert records[0]["half"] == 0.5
    probe = [r for r in records if r.get("event") == "probe"]
    assert probe[0]["norm"] == pytest.approx(recipe.model[0].weight.norm().item())
