"""The training command end to end: kill -9 + resume is bit-exact, a kill -9 during a checkpoint
write leaves the previous one loadable, two torchrun processes equal one, bad input fails early."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from t2i.cli import main as t2i_main
from t2i.training import state

CLI = [sys.executable, "-m", "t2i", "train"]
# tiny models: one thread each (what torchrun sets too) keeps the subprocesses cheap
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--preset", "tiny", "--no-progress", "--loop.sample_every", "0"]
# a text encoder trained with the UNet instead of the frozen pretrained one
TRAINED_TEXT = ["--text_encoder", "trained", "--model.context_dim", "32"]
TRAINED_TEXT += ["--text_model.dim", "32", "--text_model.layers", "1", "--text_model.heads", "2"]


def run_cli(*args: str, env: dict | None = None, check: bool = True):
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, env={**ENV, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def final_state(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = state.load_checkpoint(state.latest_checkpoint(run / "checkpoints"))
    return tensors


def log_losses(run: Path) -> list[float]:
    lines = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    return [rec["loss"] for rec in lines if "loss" in rec]


def kill_while_writing(args: list[str], step: int, run: Path) -> None:
    """Start training, wait until the checkpoint of `step` is half written, kill -9."""
    env = {**ENV, "T2I_TEST_HANG_IN_CKPT": str(step)}
    proc = subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    half = run / "checkpoints" / f"ckpt-{step:06d}.tmp" / state.TENSORS
    deadline = time.time() + 120
    while not half.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert half.exists(), proc.stderr.read() if proc.poll() is not None else "timeout"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def straight_and_killed(args: list[str], tmp_path: Path, step: int = 6):
    """The final checkpoints of a run trained straight and of the same run killed -9 while
    writing the checkpoint of `step`, then resumed: (straight, resumed, the resumed run's dir)."""
    run_cli(*args, "--out", str(tmp_path / "straight"))
    killed = tmp_path / "killed"
    kill_while_writing([*args, "--out", str(killed)], step, killed)
    run_cli(*args, "--out", str(killed), "--resume")
    return final_state(tmp_path / "straight"), final_state(killed), killed


def train_tiny_vq(tmp_path: Path) -> Path:
    run = tmp_path / "vq"
    run_cli("autoencoder", "--data", "shapes", *TINY, "--preset", "tiny_vq", "--out", str(run))
    return run / "model"


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe,extra",
    [
        ("diffusion", []),
        ("diffusion", TRAINED_TEXT),
        ("autoencoder", []),
        ("autoencoder", ["--preset", "tiny_vq"]),
        ("autoregressive", []),
        ("draw", []),
        ("gan", []),
    ],
    ids=[
        "diffusion",
        "diffusion-trained-text",
        "autoencoder",
        "vq",
        "autoregressive",
        "draw",
        "gan",
    ],
)
def test_kill9_then_resume_is_bit_exact(tmp_path, recipe, extra):
    if recipe == "autoregressive":  # codes of a VQ autoencoder, cached once for both runs
        extra = ["--autoencoder", str(train_tiny_vq(tmp_path))]
        extra += ["--cache_dir", str(tmp_path / "cache")]
    args = [recipe, "--data", "shapes", *TINY, *extra, "--loop.steps", "6"]
    args += ["--loop.ckpt_every", "3"]
    run_cli(*args, "--out", str(tmp_path / "straight"))
    killed = tmp_path / "killed"
    kill_while_writing([*args, "--out", str(killed)], 6, killed)
    # the kill hit the write of step 6: step 3 is the newest complete, loadable checkpoint
    last = state.latest_checkpoint(killed / "checkpoints")
    assert last.name == "ckpt-000003"
    assert state.load_checkpoint(last)[1]["step"] == 3
    run_cli(*args, "--out", str(killed), "--resume")
    a, b = final_state(tmp_path / "straight"), final_state(killed)
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    subs = {"diffusion": ["unet"], "autoregressive": ["transformer", "text_encoder"]}
    subs["draw"] = ["draw", "text_encoder"]
    subs["gan"] = ["gan"]  # its text encoder is the frozen MiniLM: no weights of its own
    subs = subs.get(recipe, ["autoencoder"])
    if extra == TRAINED_TEXT:
        assert any(k.startswith("ema.text.") for k in a)  # the encoder trains and resumes too
        subs.append("text_encoder")
    for sub in subs:
        wa = load_file(tmp_path / "straight" / "model" / sub / "model.safetensors")
        wb = load_file(killed / "model" / sub / "model.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa), sub
    if recipe == "autoregressive":  # `t2i export` of the run gives a model that generates
        import t2i

        assert t2i_main(["export", str(killed), "--out", str(tmp_path / "exported")]) == 0
        pipe = t2i.load(tmp_path / "exported")
        assert pipe.index["training"]["steps"] == 6 and pipe.index["autoencoder"]["training"]
        assert pipe("a red circle")[0].size == (16, 16)
    if recipe == "draw":  # the text encoder trains with it, and `t2i export` gives a model
        import t2i

        assert any(k.startswith("ema.text.") for k in a)
        assert t2i_main(["export", str(killed), "--out", str(tmp_path / "exported")]) == 0
        pipe = t2i.load(tmp_path / "exported")
        assert pipe.family == "draw" and pipe.index["training"]["steps"] == 6
        assert pipe("a red circle")[0].size == (16, 16)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_processes_equal_one(tmp_path):
    args = [
        "diffusion",
        "--data",
        "shapes",
        *TINY,
        "--loop.steps",
        "2",
        "--loop.batch_size",
        "4",
        "--loop.grad_accum",  # 2 micro-batches: the first skips the gradient all-reduce
        "2",
        "--optim.warmup_steps",
        "0",
        "--loop.ckpt_every",
        "1",
    ]
    run_cli(*args, "--out", str(tmp_path / "one"))
    cmd = [
        "torchrun",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "t2i",
        "train",
        *args,
        "--out",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = final_state(tmp_path / "one"), final_state(tmp_path / "two")
    step1, _ = state.load_checkpoint(tmp_path / "one" / "checkpoints" / "ckpt-000001")
    weights = [k for k in one if k.startswith("model.")]
    assert any(not torch.equal(one[k], step1[k]) for k in weights)  # training moved them
    # Adam divides by sqrt(v): a gradient that differs in its last bits (gloo sums in another
    # order) can move a near-zero-gradient weight by up to ~lr per step (seen: 0.1 lr); all
    # others agree to float noise
    lr = 1e-3
    close = []
    for key in weights:
        torch.testing.assert_close(two[key], one[key], atol=lr, rtol=0)
        close.append(((two[key] - one[key]).abs() <= 1e-6).flatten())
    assert torch.cat(close).float().mean() > 0.99  # over all weights: small tensors are noisy
    loss_one, loss_two = (log_losses(tmp_path / name) for name in ("one", "two"))
    assert loss_two == pytest.approx(loss_one, rel=1e-5)  # same samples, noise and dropout
    meta = state.load_checkpoint(state.latest_checkpoint(tmp_path / "two" / "checkpoints"))[1]
    assert meta["world_size"] == 2 and meta["samples_seen"] == 8


def test_bad_input_fails_before_work(tmp_path, capsys):
    out = tmp_path / "run"
    cases = {
        ("--optim.learning_rate", "1"): "valid keys",
        ("--preset", "huge"): "unknown diffusion preset 'huge'",
        ("--parameterisation", "score"): "unknown parameterisation 'score'",
        ("--loop.steps", "ten"): "bad value 'ten' for loop.steps",
        ("--data", str(tmp_path / "nope")): "nope",
        ("--init", str(tmp_path / "nope")): "choose from the bundled models",
    }
    for extra, message in cases.items():
        code = t2i_main(["train", "diffusion", "--data", "shapes", "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
    assert not out.exists()


@pytest.mark.slow
def test_latent_diffusion_through_a_trained_autoencoder(tmp_path, capsys):
    from t2i.checkpoint import load_model_folder

    ae_run, run = tmp_path / "ae", tmp_path / "ldm"
    common = ["--data", "shapes", *TINY, "--loop.steps", "2"]
    run_cli("autoencoder", *common, "--out", str(ae_run))
    run_cli(
        "diffusion",
        *common,
        "--out",
        str(run),
        "--autoencoder",
        str(ae_run / "model"),
        "--model.in_channels",
        "4",
        "--cache_dir",
        str(tmp_path / "cache"),
    )
    assert len(list((tmp_path / "cache").glob("latents-*.safetensors"))) == 1
    components, index = load_model_folder(run / "model")
    assert set(components) == {"unet", "text_encoder", "autoencoder"}
    assert components["unet"].config.in_channels == 4 and index["parameterisation"] == "eps"
    assert components["autoencoder"].config.latent_scale is not None  # set from data at export
    # the data cards: each run's own training facts, the autoencoder's inside the latent model's
    assert index["training"]["steps"] == 2 and index["training"]["images_seen"] > 0
    assert index["autoencoder"]["training"]["steps"] == 2
    assert index["autoencoder"]["data"]["source"] == "shapes"

    # `t2i export` of the same run (any checkpoint) finds the autoencoder the run recorded
    assert t2i_main(["export", str(run), "--out", str(tmp_path / "exported")]) == 0
    exported, _ = load_model_folder(tmp_path / "exported")
    assert set(exported) == {"unet", "text_encoder", "autoencoder"}
    a, b = components["autoencoder"].state_dict(), exported["autoencoder"].state_dict()
    assert all(torch.equal(a[k].half(), b[k].half()) for k in a)
    # ... and refuses an autoencoder that changed since (its latents would not match the UNet)
    weights = ae_run / "model" / "autoencoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    assert t2i_main(["export", str(run), "--out", str(tmp_path / "again")]) == 2
    assert "changed since the run was trained on it" in capsys.readouterr().err


@pytest.mark.slow
def test_latent_diffusion_through_a_patch_autoencoder(tmp_path, capsys):
    import t2i
    from t2i.checkpoint import load_model_folder

    patch = ["--preset", "patch", "--model.patch", "4", "--model.resample", "1"]
    assert (
        t2i_main(["train", "autoencoder", "--data", "shapes", "--out", str(tmp_path / "p"), *patch])
        == 0
    )
    assert "has nothing to train; model in" in capsys.readouterr().out
    run = tmp_path / "ldm"
    run_cli(
        "diffusion", "--data", "shapes", *TINY, "--loop.steps", "2", "--out", str(run),
        "--autoencoder", str(tmp_path / "p" / "model"), "--model.in_channels", "48",
        "--model.stem_kernel", "1", "--cache_dir", str(tmp_path / "cache"),
    )  # fmt: skip
    components, _ = load_model_folder(run / "model")
    assert components["autoencoder"].config.latent_channels == 48
    image = t2i.load(run / "model")("a red circle", steps=2, seed=0)[0]
    assert image.size == (16, 16)


@pytest.mark.slow
def test_fine_tuning_starts_from_the_model_folder_and_checks_it_fits(tmp_path, capsys):
    import argparse

    from t2i.checkpoint import load_component
    from t2i.training import diffusion

    base = tmp_path / "base"
    run_cli("diffusion", "--data", "shapes", *TINY, "--loop.steps", "2", "--out", str(base))
    trained = load_component(base / "model" / "unet").state_dict()

    cfg = diffusion.preset("tiny")
    cfg.model.position_features = 2  # a new, zero-initialised part on top of the trained UNet
    args = argparse.Namespace(data="shapes", init=str(base / "model"))
    recipe = diffusion.build(cfg, args)
    own = recipe.model.state_dict()
    assert all(torch.equal(own[k], v.float()) for k, v in trained.items())
    assert own["pos_proj.weight"].abs().sum() == 0
    assert recipe.config["init"]["path"] == str((base / "model").resolve())

    argv = ["train", "diffusion", "--data", "shapes", *TINY, "--out", str(tmp_path / "bad")]
    assert t2i_main([*argv, "--init", str(base / "model"), "--model.channels", "16,48"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this run's model config" in err and "of another shape" in err, err


@pytest.mark.slow
def test_a_deeper_middle_grown_from_a_trained_unet_starts_as_it(tmp_path, capsys):
    import argparse

    from t2i.checkpoint import load_component
    from t2i.training import diffusion

    base = tmp_path / "base"
    run_cli("diffusion", "--data", "shapes", *TINY, "--loop.steps", "2", "--out", str(base))
    trained = load_component(base / "model" / "unet").float().eval()
    depth = trained.config.transformer_depth

    cfg = diffusion.preset("tiny")
    cfg.model.mid_depth = depth + 2
    recipe = diffusion.build(cfg, argparse.Namespace(data="shapes", init=str(base / "model")))
    grown = [f"mid_attn.blocks.{depth}", f"mid_attn.blocks.{depth + 1}"]
    assert recipe.config["init"]["grown"] == grown
    assert "grows by 2 transformer block(s)" in capsys.readouterr().err
    net = recipe.model.eval()
    assert len(net.mid_attn.blocks) == depth + 2
    for name in grown:  # the new blocks' residual branches are zero, their inputs are not
        block = net.get_submodule(name)
        assert block.attn1.to_out.weight.abs().sum() == 0
        assert block.ff.proj_out.weight.abs().sum() == 0
        assert block.attn1.to_qkv.weight.abs().sum() > 0
    torch.manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 500])
    ctx = torch.randn(2, 5, cfg.model.context_dim)
    with torch.no_grad():
        assert torch.equal(net(x, t, ctx), trained(x, t, ctx))  # exactly what it computed
    run_cli("diffusion", "--data", "shapes", *TINY, "--loop.steps", "2", "--out",
            str(tmp_path / "ft"), "--init", str(base / "model"), "--model.mid_depth",
            str(depth + 2), "--optim.lr", "1e-2")  # fmt: skip
    after = load_component(tmp_path / "ft" / "model" / "unet")
    assert after.config.mid_depth == depth + 2  # the folder records its deeper middle
    assert after.get_submodule(grown[0]).attn1.to_out.weight.abs().sum() > 0  # and it trained


@pytest.mark.slow
def test_decoder_fine_tuning_keeps_the_encoder_and_so_the_latents(tmp_path):
    from t2i.checkpoint import load_model_folder

    common = ["--data", "shapes", *TINY, "--loop.steps", "2"]
    run_cli("autoencoder", *common, "--out", str(tmp_path / "ae"))
    start = str(tmp_path / "ae" / "model")
    run_cli("autoencoder", *common, "--out", str(tmp_path / "ft"), "--init", start,
            "--train", "decoder", "--optim.lr", "1e-2")  # fmt: skip
    before = load_model_folder(start)[0]["autoencoder"]
    after = load_model_folder(tmp_path / "ft" / "model")[0]["autoencoder"]
    a, b = before.state_dict(), after.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))
    assert after.config.latent_scale == before.config.latent_scale  # same latents, same stats
    bad = run_cli("autoencoder", *common, "--out", str(tmp_path / "x"), "--train", "decoder",
                  check=False)  # fmt: skip
    assert bad.returncode != 0 and "give --init FOLDER" in bad.stderr
