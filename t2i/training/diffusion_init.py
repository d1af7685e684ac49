"""Fine-tuning a diffusion run from a model folder or a bundled model (`--init NAME|DIR`).

`adopt` makes the run the model's: its UNet architecture, image size, parameterisation, schedule,
text encoder, autoencoder and sampling defaults; a flag or --config given over it still wins.
Then `init_unet` and `init_text` load its weights. A part the run adds to the network starts at
zero (position features, an upscaler's extra input channels), so the run starts from exactly
what the folder computed."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from t2i.checkpoint import (
    CONFIG_NAME,
    INDEX_NAME,
    WEIGHTS_NAME,
    config_from_dict,
    load_component,
    read_json_object,
    read_safetensors,
    resolve_model,
)
from t2i.data.cache import file_digest
from t2i.models.layers import TransformerBlock
from t2i.models.text_encoder import TextTransformer, build_vocab, grow_text_transformer
from t2i.models.unet import UNet, UNetConfig
from t2i.schedules import DiscreteSchedule
from t2i.training.data import TRAINED, component_dir
from t2i.training.diffusion_config import DiffusionRecipeConfig

SCHEDULES = ("ddpm", "sd", "cosine")


def adopt(cfg: DiffusionRecipeConfig, args) -> DiffusionRecipeConfig:
    """cfg with the --init model's architecture and settings; args.init becomes its folder and
    args.autoencoder its autoencoder (unless given)."""
    folder = resolve_model(args.init)
    args.init = str(folder)
    index = read_json_object(folder / INDEX_NAME)
    if index.get("family", "diffusion") != "diffusion" or "unet" not in index.get("components", {}):
        raise ValueError(f"--init {folder}: not a diffusion model folder (no unet component)")
    unet_config = read_json_object(component_dir(folder, "unet") / CONFIG_NAME)
    unet_config.pop("type", None)
    cfg.model = config_from_dict(UNetConfig, unet_config, f"{folder}/unet/{CONFIG_NAME}")
    cfg.image_size = int(index.get("image_size", cfg.image_size))
    cfg.parameterisation = index.get("parameterisation", cfg.parameterisation)
    if "schedule" in index:
        cfg.schedule = schedule_name(index["schedule"], folder)
    sampler = index.get("sampler", {})
    cfg.sampler = sampler.get("name", cfg.sampler)
    cfg.sample_steps = sampler.get("steps", cfg.sample_steps)
    if "guidance_scale" in sampler:  # the scale with the interval it is used on (or none)
        cfg.guidance_scale = sampler["guidance_scale"]
        interval = sampler.get("guidance_interval")
        cfg.guidance_interval = tuple(interval) if interval else None
    adopt_text(cfg, folder)
    if "autoencoder" in index["components"] and not getattr(args, "autoencoder", None):
        args.autoencoder = str(folder)
    return cfg


def schedule_name(schedule: dict, folder: Path) -> str:
    for name in SCHEDULES:
        if DiscreteSchedule.preset(name).to_dict() == schedule:
            return name
    raise ValueError(f"--init {folder}: its schedule {schedule} is none of {list(SCHEDULES)}")


def adopt_text(cfg: DiffusionRecipeConfig, folder: Path) -> None:
    """The model's text encoder: the same frozen one (and token count), or its trained one."""
    path = component_dir(folder, "text_encoder")
    config = read_json_object(path / CONFIG_NAME)
    if config.get("type") == "text_transformer":
        cfg.text_encoder = TRAINED
        cfg.text_model = load_component(path).config
        cfg.max_tokens = cfg.text_model.max_length
    elif config.get("type") == "pretrained_text_encoder":
        cfg.text_encoder = config.get("path") or "minilm"
        cfg.max_tokens = int(config.get("max_length", cfg.max_tokens))


def init_text(
    cfg: DiffusionRecipeConfig, folder: str | Path, captions: list[str]
) -> TextTransformer | None:
    """A fine-tuning run's trained text encoder: the --init folder's, when it has one. None when
    the folder's text encoder is a frozen one.

    The run keeps the folder's words and learns the words of its captions the folder lacks
    (new rows after the old ones); `--text_model.layers` above the folder's adds blocks that start
    as the identity. So the run starts from exactly what the folder computed on its own words."""
    path = Path(folder) / "text_encoder"
    config = path / CONFIG_NAME
    if not config.is_file() or json.loads(config.read_text()).get("type") != "text_transformer":
        return None
    encoder = load_component(path).train()
    own = encoder.config
    if replace(cfg.text_model, vocab=[], layers=0) != replace(own, vocab=[], layers=0) or (
        cfg.text_model.layers < own.layers
    ):
        raise ValueError(
            f"--init {folder}: its text encoder {replace(own, vocab=[])} does not fit "
            f"this run's text_model {replace(cfg.text_model, vocab=[])}; give the same "
            "--text_model.* settings (only --text_model.layers may grow)"
        )
    known = list(own.vocab) + [w for w in cfg.text_model.vocab if w not in own.vocab]
    new = [w for w in build_vocab(captions) if w not in known]
    cfg.text_model = replace(cfg.text_model, vocab=known + new)
    if cfg.text_model == own:
        return encoder
    listed = ", ".join(repr(w) for w in new[:12]) + (", ..." if len(new) > 12 else "")
    print(
        f"the text encoder of {folder} learns {len(new)} new word(s) of the captions"
        + (f" ({listed})" if new else "")
        + f" and {cfg.text_model.layers - own.layers} new block(s)",
        file=sys.stderr,
        flush=True,
    )
    return grow_text_transformer(encoder, cfg.text_model)


def init_unet(net: UNet, folder: str | Path) -> dict:
    """Start from a trained model folder's UNet (fine-tuning); returns {"path", "digest"}.

    The folder's UNet must have this run's architecture; parameters it lacks are allowed only where
    they start at zero and so change nothing (`model.position_features` added to a trained UNet),
    and so are extra input channels (`model.cond_channels` added: an upscaler from a base model).
    """
    weights = component_dir(folder, "unet") / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"--init {folder}: no unet/model.safetensors (a model folder?)")
    state = read_safetensors(weights)
    own = net.state_dict()  # freshly built: parts that start at zero are all zeros here
    state = widen_conv_in(state, own, net.config)
    shared = state.keys() & own.keys()
    grown = grown_blocks(net, state)
    new_keys = {k for name in grown for k in own if k.startswith(name + ".")}
    problems = {
        "not in this UNet": sorted(state.keys() - own.keys()),
        "missing": sorted(
            k for k in own.keys() - state.keys() - new_keys if own[k].count_nonzero() > 0
        ),
        "of another shape": sorted(k for k in shared if state[k].shape != own[k].shape),
    }
    detail = "; ".join(f"{what}: {keys[:4]}" for what, keys in problems.items() if keys)
    if detail:
        raise ValueError(
            f"--init {folder}: its UNet does not fit this run's model config ({detail}); "
            "give the same --model.* settings it was trained with (see its unet/config.json)"
        )
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    record = {"path": str(Path(folder).resolve()), "digest": file_digest(weights)}
    if grown:
        for name in grown:
            net.get_submodule(name).start_as_identity()
        print(
            f"the UNet of {folder} grows by {len(grown)} transformer block(s): {grown}",
            file=sys.stderr,
            flush=True,
        )
        record["grown"] = grown
    return record


def grown_blocks(net: UNet, state: dict) -> list[str]:
    """The transformer blocks of `net` that the trained `state` has none of (a deeper middle,
    `--model.mid_depth`): each starts as the identity, so the grown UNet computes what the trained
    one did, and training then gives the scene's parts more layers to meet in."""
    names = []
    for name, module in net.named_modules():
        if isinstance(module, TransformerBlock) and not any(
            f"{name}.{key}" in state for key in module.state_dict()
        ):
            names.append(name)
    return names


def widen_conv_in(state: dict, own: dict, config: UNetConfig) -> dict:
    """A trained UNet's stem with zero weights for this UNet's extra x_cond channels, so the
    widened UNet computes what the trained one did until training moves them. The UNet
    concatenates x_cond after x before the patch stem, so the new channels come last."""
    key = "conv_in.weight"
    old, new = state.get(key), own[key]
    if old is None or old.shape == new.shape or config.cond_channels == 0:
        return state
    trained_in = config.in_channels * config.patch_size**2
    if old.shape[1] != trained_in or old.shape[0] != new.shape[0] or old.shape[2:] != new.shape[2:]:
        return state  # not just the extra channels: reported as a shape mismatch
    widened = torch.zeros(new.shape, dtype=old.dtype)
    widened[:, :trained_in] = old
    return {**state, key: widened}
