"""Export a diffusion or autoregressive run's newest checkpoint (EMA weights) as a model folder,
with a data card.

    t2i export runs/shapes --out my-model            # fp16 weights, any step of a run

A run need not be finished: this is how a model is taken from a long run while it continues.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from t2i.checkpoint import DTYPES, INDEX_NAME, atomic_write_json
from t2i.models.autoencoder import AutoencoderConfig, VQConfig
from t2i.models.autoencoder_loss import AutoencoderLossConfig
from t2i.models.text_encoder import TextTransformer, TextTransformerConfig
from t2i.models.token_transformer import TokenTransformer, TokenTransformerConfig
from t2i.models.unet import UNet, UNetConfig
from t2i.training import state
from t2i.training.config import LoopConfig, OptimConfig


def _nested(cls, data: dict, source: str, model_cls=UNetConfig):
    """A dataclass (with dataclass fields) from its asdict(); unknown keys are errors.
    model_cls: the class of its "model" field (the recipe's network config)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} keys {unknown}")
    kw = {}
    for key, value in data.items():
        sub = {
            "model": model_cls,
            "text_model": TextTransformerConfig,
            "loop": LoopConfig,
            "optim": OptimConfig,
            "loss": AutoencoderLossConfig,
        }.get(key)
        kw[key] = _nested(sub, value, source) if sub and isinstance(value, dict) else value
    return cls(**kw)


def training_card(run_dir: Path, meta: dict) -> dict:
    """What the model saw: steps, images, wall time (from the run's log).

    A resumed run restarts its clock, so the log holds one rising `elapsed_s` run per segment:
    the total is the sum of the segments' last values (steps redone after a kill count twice:
    that time was spent)."""
    segments: list[float] = []
    log = run_dir / "log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            elapsed = json.loads(line).get("elapsed_s")
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


def export_run(
    run_dir: str | Path,
    out: str | Path,
    dtype: str = "float16",
    data: str | None = None,
    ema: bool = True,
    base: str | Path | None = None,
    guidance: float | None = None,
) -> Path:
    """The newest complete checkpoint of a diffusion run -> a model folder at `out`.

    data: the run's `--data`, for the data card (runs record it; give it for older runs).
    ema: export the EMA weights (when the run keeps them), else the raw trained weights.
    base: for an upscaler run, the model folder of its base model, copied into `out/base`: the
    folder is then a cascade (t2i/cascade.py) that `t2i generate` runs end to end.
    guidance: the folder's default guidance scale instead of the run's (a cascade's base stages
    sample with their own default: a 1 px stage wants 1).
    """
    from t2i.training.data import TextCache, load_frozen_autoencoder
    from t2i.training.diffusion import (
        TRAINED,
        DiffusionRecipeConfig,
        TextAndUNet,
        export_model,
        split,
    )

    run_dir, out = Path(run_dir), Path(out)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)}")
    found = state.latest_checkpoint(run_dir / "checkpoints")
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint in {run_dir / 'checkpoints'}")
    tensors, meta = state.load_checkpoint(found)
    if meta.get("recipe") == "autoencoder":
        if base is not None or guidance is not None:
            raise ValueError("--base and --guidance apply to diffusion runs only")
        return _export_autoencoder(run_dir, out, found, tensors, meta, dtype, data, ema)
    if meta.get("recipe") == "autoregressive":
        if base is not None or guidance is not None:
            raise ValueError("--base and --guidance apply to diffusion runs only")
        return _export_autoregressive(run_dir, out, found, tensors, meta, dtype, data, ema)
    if meta.get("recipe") != "diffusion":
        raise ValueError(
            f"{found}: recipe {meta.get('recipe')!r}; export handles 'diffusion', "
            "'autoregressive' and 'autoencoder'"
        )
    recipe = dict(meta["config"]["recipe"])
    recipe.pop("recipe", None)
    data = recipe.pop("data", None) or data
    ae_record = recipe.pop("autoencoder", None)
    recipe.pop("init", None)  # where a fine-tuning run started: not part of the model
    if not data:
        raise ValueError(f"{found} does not record its data: give it (e.g. --data shapes)")
    cfg = _nested(DiffusionRecipeConfig, recipe, str(found))
    if guidance is not None:
        if not 0 <= guidance <= 100:
            raise ValueError(f"--guidance must be in [0, 100], got {guidance}")
        cfg.guidance_scale = guidance
    if base is not None and not cfg.low_res:
        raise ValueError(f"--base {base}: {run_dir} is not an upscaler run (it has no low_res)")
    if base is not None and not (Path(base) / INDEX_NAME).is_file():
        raise FileNotFoundError(f"--base {base}: not a model folder (no {INDEX_NAME})")
    model = net = UNet(cfg.model)
    text = None
    if cfg.text_encoder == TRAINED:  # the text encoder trained with the UNet is in the checkpoint
        model = TextAndUNet(net, TextTransformer(cfg.text_model))
    else:
        text = TextCache.load(cfg.text_encoder, cfg.max_tokens)
    prefix = "ema." if ema and any(k.startswith("ema.") for k in tensors) else "model."
    model.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    net, text = split(model.to(memory_format=torch.contiguous_format).eval(), text)
    ae = None
    if ae_record is not None:  # a latent run: the model folder carries its autoencoder
        ae, _ = load_frozen_autoencoder(ae_record["path"], ae_record["digest"])
    card = training_card(run_dir, meta)
    export_model(cfg, net, text, ae, out, data, DTYPES[dtype], card, ae_record)
    if base is not None:
        add_base(out, Path(base))
    return out


def add_base(folder: Path, base: Path) -> None:
    """Copy the base model into the upscaler's folder and name it there; the folder is checked
    by loading it, so a base of the wrong size or channels fails here, not at generation."""
    from t2i.families import load

    target = folder / "base"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(base, target)
    index_path = folder / INDEX_NAME
    atomic_write_json(index_path, {**json.loads(index_path.read_text()), "base": "base"})
    load(folder)


def _export_autoregressive(run_dir, out, found, tensors, meta, dtype, data, ema) -> Path:
    """An autoregressive run's checkpoint -> transformer/, text_encoder/ and its VQ autoencoder."""
    from t2i.training.autoregressive import (
        TRAINED,
        AutoregressiveRecipeConfig,
        TextAndTokens,
        export_model,
    )
    from t2i.training.data import TextCache, load_frozen_autoencoder

    recipe = dict(meta["config"]["recipe"])
    data = recipe.pop("data", None) or data
    ae_record = recipe.pop("autoencoder")
    cfg = _nested(AutoregressiveRecipeConfig, recipe, str(found), TokenTransformerConfig)
    model, cache = TokenTransformer(cfg.model), None
    if cfg.text_encoder == TRAINED:
        model = TextAndTokens(model, TextTransformer(cfg.text_model))
    else:
        cache = TextCache.load(cfg.text_encoder, cfg.max_tokens)
    prefix = "ema." if ema and any(k.startswith("ema.") for k in tensors) else "model."
    model.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    ae, _ = load_frozen_autoencoder(ae_record["path"], ae_record["digest"])
    card = training_card(run_dir, meta)
    export_model(cfg, model.eval(), cache, ae, out, data, DTYPES[dtype], card, ae_record)
    return out


def _export_autoencoder(run_dir, out, found, tensors, meta, dtype, data, ema) -> Path:
    """An autoencoder run's checkpoint -> autoencoder/ (KL or VQ), latent stats from its data."""
    from t2i.training.autoencoder import AutoencoderRecipeConfig, AutoencoderWithLoss, export_model
    from t2i.training.data import open_dataset

    recipe = dict(meta["config"]["recipe"])
    data = recipe.pop("data", None) or data
    if not data:
        raise ValueError(f"{found} does not record its data: give it (e.g. --data shapes)")
    vq = "codebook_size" in recipe["model"]
    cfg = _nested(
        AutoencoderRecipeConfig, recipe, str(found), VQConfig if vq else AutoencoderConfig
    )
    model = AutoencoderWithLoss(cfg)
    prefix = "ema." if ema and any(k.startswith("ema.") for k in tensors) else "model."
    model.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    model = model.to(memory_format=torch.contiguous_format).eval()
    dataset, _ = open_dataset(data, cfg.image_size, cfg.stats_images)
    card = training_card(run_dir, meta)
    export_model(cfg, model.ae, dataset, out, data, DTYPES[dtype], card)
    return out
