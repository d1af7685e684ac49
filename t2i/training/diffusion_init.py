"""Fine-tuning a diffusion run from a model folder (`--init`): its UNet, and its trained text
encoder when it has one. A part the run adds to the network starts at zero (position features,
an upscaler's extra input channels), so the run starts from exactly what the folder computed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from t2i.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_component, read_safetensors
from t2i.data.cache import file_digest
from t2i.models.text_encoder import TextTransformer
from t2i.models.unet import UNet, UNetConfig
from t2i.training.data import component_dir
from t2i.training.diffusion_config import DiffusionRecipeConfig


def init_text(cfg: DiffusionRecipeConfig, folder: str | Path) -> TextTransformer | None:
    """A fine-tuning run's trained text encoder: the --init folder's, when it has one (its words
    become the run's vocabulary). None when the folder's text encoder is a frozen one."""
    path = Path(folder) / "text_encoder"
    config = path / CONFIG_NAME
    if not config.is_file() or json.loads(config.read_text()).get("type") != "text_transformer":
        return None
    encoder = load_component(path).train()
    wanted = replace(cfg.text_model, vocab=encoder.config.vocab)
    if wanted != encoder.config:
        raise ValueError(
            f"--init {folder}: its text encoder {replace(encoder.config, vocab=[])} does not fit "
            f"this run's text_model {replace(cfg.text_model, vocab=[])}; give the same "
            "--text_model.* settings"
        )
    cfg.text_model = encoder.config
    return encoder


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
    problems = {
        "not in this UNet": sorted(state.keys() - own.keys()),
        "missing": sorted(k for k in own.keys() - state.keys() if own[k].count_nonzero() > 0),
        "of another shape": sorted(k for k in shared if state[k].shape != own[k].shape),
    }
    detail = "; ".join(f"{what}: {keys[:4]}" for what, keys in problems.items() if keys)
    if detail:
        raise ValueError(
            f"--init {folder}: its UNet does not fit this run's model config ({detail}); "
            "give the same --model.* settings it was trained with (see its unet/config.json)"
        )
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    return {"path": str(Path(folder).resolve()), "digest": file_digest(weights)}


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
