"""LoRA layers (t2i/adapters/lora.py): a fresh or zero-scaled adapter is the base network exactly,
fusing then unfusing restores the weights bit for bit, several apply together, files are checked
before they attach."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from t2i.adapters import lora
from t2i.models.unet import UNet, UNetConfig


def tiny_unet(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(UNetConfig.preset("tiny", context_dim=16)).eval()


def run(net: UNet) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 16, generator=g)
    context = torch.randn(2, 5, 16, generator=g)
    with torch.no_grad():
        return net(x, torch.tensor([10.0, 500.0]), context=context)


def randomise(net: torch.nn.Module, name: str, seed: int) -> None:
    """Give adapter `name` non-zero up weights (a trained adapter)."""
    g = torch.Generator().manual_seed(seed)
    for layer in lora.layers(net).values():
        up = layer.adapters[name].up.weight
        with torch.no_grad():
            up.copy_(torch.randn(up.shape, generator=g) * 0.05)


def weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if ".adapters." not in k}


def test_a_fresh_adapter_and_scale_zero_leave_the_output_unchanged():
    net = tiny_unet()
    before = run(net)
    paths = lora.attach(net, "style", lora.LoraConfig(rank=2))
    assert paths and all("to_" in p for p in paths)
    assert torch.equal(run(net), before)  # up starts at zero
    randomise(net, "style", 0)
    assert not torch.allclose(run(net), before)
    lora.set_scales(net, {"style": 0.0})
    assert torch.equal(run(net), before)
    lora.detach(net)
    assert not lora.layers(net) and torch.equal(run(net), before)


def test_fuse_then_unfuse_restores_the_weights_bit_for_bit():
    net = tiny_unet()
    original = weights(net)
    cfg = lora.LoraConfig(rank=2, convs=True)
    for i, name in enumerate(("style", "subject")):
        lora.attach(net, name, cfg)
        randomise(net, name, i)
    lora.set_scales(net, {"style": 0.8, "subject": 0.5})
    together = run(net)
    lora.fuse(net)
    assert torch.allclose(run(net), together, atol=1e-4)  # merged equals applied at run time
    assert not torch.equal(weights(net)["conv_in.weight"], torch.zeros(1))
    with pytest.raises(ValueError, match="fused at 0.8: unfuse first"):
        lora.set_scales(net, {"style": 1.0})
    lora.unfuse(net)
    restored = {k.replace(".base.", "."): v for k, v in weights(net).items()}
    assert restored.keys() == original.keys()
    assert all(torch.equal(restored[k], original[k]) for k in original)
    assert torch.allclose(run(net), together, atol=1e-5)  # back to applying them at run time


def test_a_file_round_trips_and_refuses_what_does_not_fit(tmp_path):
    net = tiny_unet()
    lora.attach(net, "style", lora.LoraConfig(rank=2))
    randomise(net, "style", 3)
    lora.set_scales(net, {"style": 1.0})
    expected = run(net)
    tensors = lora.adapter_state(net, "style", "unet")
    meta = lora.LoraMeta("style", "tiny", "abc", 2, 4.0, list(lora.ATTENTION), ["unet"])
    path = lora.save(tmp_path / "style.safetensors", tensors, meta, dtype=torch.float32)
    read_meta, read_tensors = lora.read(path)
    assert read_meta == meta
    fresh = tiny_unet()
    assert lora.load_into(fresh, "unet", "style", read_meta, read_tensors) == len(tensors) // 2
    assert torch.equal(run(fresh), expected)

    other = UNet(UNetConfig.preset("tiny", context_dim=32))  # wider cross-attention
    with pytest.raises(ValueError, match="to_kv down is"):
        lora.load_into(other, "unet", "style", read_meta, read_tensors)
    bare = tmp_path / "bare.safetensors"
    save_file({"x.lora_up.weight": torch.zeros(2, 2)}, str(bare))
    with pytest.raises(ValueError, match="no 't2i_adapter' metadata"):
        lora.read(bare)
    bad = tmp_path / "bad.safetensors"
    meta_json = json.dumps({**meta.__dict__, "rank": 100_000})
    save_file({"x.lora_up.weight": torch.zeros(2, 2)}, str(bad), {"t2i_adapter": meta_json})
    with pytest.raises(ValueError, match="lora rank must be in"):
        lora.read(bad)
    with pytest.raises(ValueError, match="never unpickles"):
        lora.read(tmp_path / "style.pt")


def test_config_bounds_are_named():
    with pytest.raises(ValueError, match="lora rank must be in"):
        lora.LoraConfig(rank=0)
    with pytest.raises(ValueError, match="match no layer"):
        lora.attach(tiny_unet(), "x", lora.LoraConfig(targets=("*nothing*",)))
