"""Merging several LoRAs into one set of weights, two ways.

- `weighted_sum`: W = W0 + sum_i s_i * dW_i (what fusing at run time computes). Each concept's
  delta also acts on the other concepts' inputs, so two concepts can bleed into each other.
- `gradient_fusion` (Mix-of-Show, Gu et al. 2023, Sec. 3.3): per layer, the W that best keeps
  every concept's own behaviour on its own inputs,
      W = argmin_W  sum_i || (W0 + s_i dW_i) X_i - W X_i ||^2  (+ ridge * ||W - W0||^2),
  with X_i the layer's inputs while concept i's LoRA alone draws its own prompts. The normal
  equations give W = (sum_i W_i C_i + ridge W0) (sum_i C_i + ridge I)^-1, C_i = X_i X_i^T
  (in x in per Linear layer), solved in float64. Linear layers only (the attention projections,
  the default targets); a LoRA on convolutions is merged by weighted sum there.

Both return the merged weights per layer path; `write_merged` saves a model folder with them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from t2i.adapters import lora


@torch.no_grad()
def weighted_sum(network: nn.Module, scales: dict[str, float]) -> dict[str, torch.Tensor]:
    """{layer path: W0 + sum_i s_i dW_i} for every layer any of the adapters touches."""
    out = {}
    for path, layer in lora.layers(network).items():
        used = {n: s for n, s in scales.items() if n in layer.adapters}
        if used:
            base = (layer.original if layer.original is not None else layer.base.weight).float()
            out[path] = base + sum(s * layer.adapters[n].delta() for n, s in used.items())
    return out


@torch.no_grad()
def layer_inputs(
    network: nn.Module, name: str, scale: float, draw: Callable[[], None]
) -> dict[str, torch.Tensor]:
    """{layer path: C = X X^T} over every input the layer saw while `draw()` ran with adapter
    `name` alone at `scale` (the others at 0). Linear layers only."""
    grams: dict[str, torch.Tensor] = {}
    hooks = []
    for path, layer in lora.layers(network).items():
        if name in layer.adapters and isinstance(layer.base, nn.Linear):

            def hook(_module, args, _out, path=path):
                x = args[0].detach().double().reshape(-1, args[0].shape[-1])
                grams[path] = grams.get(path, 0) + x.T @ x

            hooks.append(layer.register_forward_hook(hook))
    lora.set_scales(network, {n: (scale if n == name else 0.0) for n in lora.names(network)})
    try:
        draw()
    finally:
        for h in hooks:
            h.remove()
    return grams


@torch.no_grad()
def gradient_fusion(
    network: nn.Module,
    scales: dict[str, float],
    draws: dict[str, Callable[[], None]],
    ridge: float = 1e-3,
) -> dict[str, torch.Tensor]:
    """{layer path: fused W}: per Linear layer the least-squares W over every concept's inputs
    (module docstring); other layers by weighted sum. `draws[name]()` runs the model on concept
    `name`'s own prompts (its activations are recorded with that adapter alone applied)."""
    grams = {name: layer_inputs(network, name, scales[name], draws[name]) for name in scales}
    merged = weighted_sum(network, scales)
    for path, layer in lora.layers(network).items():
        own = [n for n in scales if path in grams[n]]
        if not own:
            continue
        w0 = (layer.original if layer.original is not None else layer.base.weight).double()
        scale_c = max(float(grams[n][path].diagonal().mean()) for n in own) or 1.0
        eye = torch.eye(w0.shape[1], dtype=torch.float64)
        lhs = ridge * scale_c * eye
        rhs = ridge * scale_c * w0
        for n in own:
            c = grams[n][path]
            wi = w0 + scales[n] * layer.adapters[n].delta().double()
            lhs = lhs + c
            rhs = rhs + wi @ c
        merged[path] = torch.linalg.solve(lhs, rhs.T).T.float()  # lhs is symmetric
    return merged


@torch.no_grad()
def apply_merged(network: nn.Module, merged: dict[str, torch.Tensor]) -> None:
    """Write merged weights into the base layers (the adapters set to 0 and left attached)."""
    layers = lora.layers(network)
    for path, weight in merged.items():
        base = layers[path].base.weight
        base.copy_(weight.to(base.dtype))
    lora.set_scales(network, {n: 0.0 for n in lora.names(network)})


def write_merged(pipe, merged: dict[str, dict[str, torch.Tensor]], out, record: dict) -> None:
    """Save `pipe` with merged weights ({network: {layer path: W}}) as a new model folder (fp16,
    as models ship): the LoRAs are folded in and removed; `record` says how, in its index."""
    from t2i.checkpoint import save_model_folder

    networks = pipe.adapter_networks()
    for prefix, weights in merged.items():
        apply_merged(networks[prefix], weights)
    for name in list(pipe.loras.loaded):
        pipe.loras.unload(name)
    components = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    if getattr(pipe, "autoencoder", None) is not None:
        components["autoencoder"] = pipe.autoencoder
    index = {k: v for k, v in pipe.index.items() if k != "components"}
    index["merged_loras"] = record
    save_model_folder(out, components, index, dtype=torch.float16)
