"""What every recipe's export shares: the data card's training facts, configs read back from a
checkpoint, the weights to export, and an upscaler's base model.

    t2i export runs/shapes --out my-model            # fp16 weights, any step of a run

A run need not be finished: this is how a model is taken from a long run while it continues.
Each recipe writes its own folder (`export_checkpoint` in its module); the training CLI picks the
recipe from the checkpoint (`t2i.training.cli.export_run`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from t2i.checkpoint import DTYPES, INDEX_NAME, atomic_write_json
from t2i.families import load
from t2i.models.autoencoder_loss import AutoencoderLossConfig
from t2i.models.text_encoder import TextLSTMConfig, TextTransformerConfig
from t2i.models.unet import UNetConfig
from t2i.training import state
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.log import read_log


def nested_config(cls, data: dict, source: str, model_cls=UNetConfig):
    """A recipe config (a dataclass with dataclass fields) from its asdict(); unknown keys are
    errors. model_cls: the class of its "model" field (the recipe's network config)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} keys {unknown}")
    kw = {}
    for key, value in data.items():
        sub = {
            "model": model_cls,
            "text_model": TextTransformerConfig,
            "text_lstm": TextLSTMConfig,
            "loop": LoopConfig,
            "optim": OptimConfig,
            "loss": AutoencoderLossConfig,
        }.get(key)
        kw[key] = nested_config(sub, value, source) if sub and isinstance(value, dict) else value
    return cls(**kw)


def training_card(run_dir: Path, meta: dict) -> dict:
    """What the model saw: steps, images, wall time (from the run's log).

    A resumed run restarts its clock, so the log holds one rising `elapsed_s` run per segment:
    the total is the sum of the segments' last values (steps redone after a kill count twice:
    that time was spent)."""
    segments: list[float] = []
    log = run_dir / "log.jsonl"
    if log.is_file():
        for rec in read_log(log):  # a torn last line (a killed run) is dropped
            elapsed = rec.get("elapsed_s")
            if elapsed is None:
                continue
            if not segments or float(elapsed) < segments[-1]:
                segments.append(0.0)
            segments[-1] = float(elapsed)
    return {
        "steps": int(meta["step"]),
        "images_seen": int(meta["samples_seen"]),
        "wall_time_s": round(sum(segments), 1),
        "wall_time_s_last_segment": round(segments[-1] if segments else 0.0, 1),
        "segments": len(segments),
        "exported": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def add_training_card(folder: Path, run_dir: Path, checkpoint: Path) -> None:
    """Write the run's training facts (as of `checkpoint`) into an exported folder's data card."""
    meta = json.loads((checkpoint / state.META).read_text())
    index_path = folder / INDEX_NAME
    index = json.loads(index_path.read_text())
    index["training"] = training_card(run_dir, meta)
    atomic_write_json(index_path, index)


def latest(run_dir: str | Path, dtype: str) -> tuple[Path, dict, dict]:
    """(the newest complete checkpoint of a run, its tensors, its meta); dtype is checked."""
    check_dtype(dtype)
    loaded = state.load_latest(Path(run_dir) / "checkpoints")  # past a damaged newest one
    if loaded is None:
        raise FileNotFoundError(f"no complete checkpoint in {Path(run_dir) / 'checkpoints'}")
    found, tensors, meta, _ = loaded
    return found, tensors, meta


def at_step(run_dir: str | Path, step: int, dtype: str) -> tuple[Path, dict, dict]:
    """(the run's checkpoint of `step`, its tensors, its meta): an earlier point of a run than its
    newest, kept by `--loop.keep_ckpts`. A step with no checkpoint names the steps that have one."""
    check_dtype(dtype)
    ckpt_dir = Path(run_dir) / "checkpoints"
    path = ckpt_dir / f"ckpt-{step:06d}"
    if not (path / state.TENSORS).is_file():
        kept = sorted(int(p.name[5:]) for p in ckpt_dir.glob("ckpt-[0-9]*") if p.name[5:].isdigit())
        have = ", ".join(map(str, kept)) or "none"
        raise FileNotFoundError(f"no checkpoint of step {step} in {ckpt_dir}; steps kept: {have}")
    tensors, meta = state.load_checkpoint(path)
    return path, tensors, meta


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")


def model_weights(tensors: dict[str, torch.Tensor], ema: bool = True) -> dict[str, torch.Tensor]:
    """The model's state dict from a checkpoint: the EMA weights when kept (and wanted)."""
    prefix = "ema." if ema and any(k.startswith("ema.") for k in tensors) else "model."
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def run_facts(training: dict | None, ae_record: dict | None) -> dict:
    """The data card's training facts and its autoencoder's own card, where known."""
    facts = {"training": training} if training else {}
    if ae_record is not None:
        facts["autoencoder"] = autoencoder_card(Path(ae_record["path"]))
    return facts


def autoencoder_card(folder: Path) -> dict:
    """The autoencoder folder's own data and training facts: part of what the model cost. A
    whole model folder (a fine-tune adopts its --init's autoencoder) holds them in its card's
    `autoencoder` entry; its own data and training are the diffusion model's, not the
    autoencoder's."""
    index_path = folder / INDEX_NAME
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    if isinstance(index.get("autoencoder"), dict):
        index = index["autoencoder"]
    return {k: index[k] for k in ("data", "training") if k in index}


def add_base(folder: Path, base: Path) -> None:
    """Copy the base model into the upscaler's folder and name it there; the folder is checked
    by loading it, so a base of the wrong size or channels fails here, not at generation."""
    target = folder / "base"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(base, target)
    index_path = folder / INDEX_NAME
    atomic_write_json(index_path, {**json.loads(index_path.read_text()), "base": "base"})
    load(folder)
