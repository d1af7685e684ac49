"""Merging LoRAs (t2i/adapters/merge.py): gradient fusion keeps each concept's outputs on its own
inputs where a weighted sum lets them bleed; a merged model folder draws what the LoRAs drew."""

from __future__ import annotations

import numpy as np
import torch
from test_adapters_lora_pipeline import make_lora, model_dir  # noqa: F401 (fixture)
from torch import nn

import t2i
from t2i.adapters import lora, merge


def two_concepts() -> tuple[nn.Module, dict, dict]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8))
    for name in ("a", "b"):
        lora.attach(net, name, lora.LoraConfig(rank=2, targets=("0",)))
        with torch.no_grad():
            lora.layers(net)["0"].adapters[name].up.weight.normal_()
    inputs = {"a": torch.zeros(64, 8), "b": torch.zeros(64, 8)}
    inputs["a"][:, :4] = torch.randn(64, 4)  # each concept's inputs in its own subspace
    inputs["b"][:, 4:] = torch.randn(64, 4)
    draws = {n: (lambda x=x: net(x)) for n, x in inputs.items()}
    return net, inputs, draws


@torch.no_grad()
def own_error(net: nn.Module, weight: torch.Tensor, inputs: dict) -> float:
    """Largest error, over the concepts, of a merged weight against each LoRA alone on its own
    inputs."""
    layer = lora.layers(net)["0"]
    worst = 0.0
    for name, x in inputs.items():
        wanted = x @ (layer.base.weight + layer.adapters[name].delta()).T
        worst = max(worst, float((x @ weight.T - wanted).abs().max()))
    return worst


def test_gradient_fusion_keeps_each_concept_on_its_own_inputs():
    net, inputs, draws = two_concepts()
    scales = {"a": 1.0, "b": 1.0}
    summed = merge.weighted_sum(net, scales)["0"]
    fused = merge.gradient_fusion(net, scales, draws, ridge=1e-6)["0"]
    assert own_error(net, summed, inputs) > 0.5  # each delta acts on the other's inputs
    assert own_error(net, fused, inputs) < 1e-3


def test_a_merged_folder_draws_what_the_loras_drew(model_dir, tmp_path):  # noqa: F811
    pipe = t2i.load(model_dir)
    for i, name in enumerate(("style", "subject")):
        pipe.load_lora(make_lora(pipe, tmp_path, name, i))
    prompt = "a red circle <lora:style:0.5> <lora:subject:0.5>"
    applied = np.asarray(pipe(prompt, seed=4)[0]).astype(int)
    merged = {"unet": merge.weighted_sum(pipe.unet, {"style": 0.5, "subject": 0.5})}
    merge.write_merged(pipe, merged, tmp_path / "merged", {"method": "weighted_sum"})
    again = t2i.load(tmp_path / "merged")
    assert again.index["merged_loras"] == {"method": "weighted_sum"}
    drawn = np.asarray(again("a red circle", seed=4)[0]).astype(int)
    assert np.abs(drawn - applied).max() <= 3  # fp16 weights
