"""Model folders: bit-exact round trips, fp16, refusal of pickles / truncated files / bad shapes."""

import json
import os
import pickle

import pytest
import torch

from t2i.checkpoint import (
    atomic_write_bytes,
    load_component,
    load_model_folder,
    read_safetensors,
    save_component,
    save_model_folder,
)
from t2i.models.autoencoder import AutoencoderConfig, AutoencoderKL, AutoencoderVQ, VQConfig
from t2i.models.clip import CLIP, CLIPConfig
from t2i.models.text_encoder import TextTransformer, TextTransformerConfig
from t2i.models.unet import UNet, UNetConfig


def _components():
    torch.manual_seed(0)
    text = TextTransformerConfig.preset("tiny", vocab=["red", "circle"])
    ae = AutoencoderKL(AutoencoderConfig.preset("tiny"))
    ae.set_latent_stats([0.5, 1.0, 2.0, 1.5], [0.1, 0.0, -0.1, 0.2])
    return {
        "unet": UNet(UNetConfig.preset("tiny", cond_channels=1)),
        "autoencoder": ae,
        "vq": AutoencoderVQ(VQConfig.preset("tiny")),
        "text_encoder": TextTransformer(text),
        "clip": CLIP(CLIPConfig.preset("tiny", text=text)),
    }


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)


def test_model_folder_round_trip_is_bit_exact(tmp_path):
    comps = _components()
    save_model_folder(tmp_path, comps, index={"schedule": {"name": "cosine"}})
    loaded, index = load_model_folder(tmp_path)
    assert index == {"schedule": {"name": "cosine"}} and loaded.keys() == comps.keys()
    for name, module in comps.items():
        assert type(loaded[name]) is type(module) and loaded[name].config == module.config
        _assert_same_state(module, loaded[name])
    assert loaded["autoencoder"].config.latent_scale == [0.5, 1.0, 2.0, 1.5]
    assert loaded["text_encoder"].tokenizer.vocab == comps["text_encoder"].tokenizer.vocab
    x = torch.randn(1, 3, 16, 16)
    args = (torch.ones(1), torch.randn(1, 4, 32), None, None, torch.randn(1, 1, 16, 16))
    with torch.no_grad():
        assert torch.equal(comps["unet"].eval()(x, *args), loaded["unet"](x, *args))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_fp16_save_halves_size_and_loads_close(tmp_path):
    unet = UNet(UNetConfig.preset("tiny"))
    save_component(unet, tmp_path / "a", torch.float32)
    save_component(unet, tmp_path / "b", torch.float16)
    size = [os.path.getsize(tmp_path / d / "model.safetensors") for d in "ab"]
    assert size[1] < 0.6 * size[0]
    assert (
        read_safetensors(tmp_path / "b" / "model.safetensors")["conv_in.weight"].dtype
        == torch.float16
    )
    loaded = load_component(tmp_path / "b")
    w, w16 = unet.conv_in.weight, loaded.conv_in.weight
    assert w16.dtype == torch.float32 and torch.equal(w16, w.half().float())


def test_refuses_pickle_and_truncated_files(tmp_path):
    unet = UNet(UNetConfig.preset("tiny"))
    save_component(unet, tmp_path)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    torch.save(unet.state_dict(), weights)  # a pickled .pt under the safetensors name
    with pytest.raises(ValueError, match="pickle"):
        load_component(tmp_path)
    weights.write_bytes(pickle.dumps({"conv_in.weight": [0.0]}))  # a raw pickle
    with pytest.raises(ValueError, match="pickle"):
        load_component(tmp_path)
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_component(tmp_path)
    weights.write_bytes(good[:100])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_component(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_component(tmp_path)


def test_refuses_wrong_shapes_and_names(tmp_path):
    save_component(UNet(UNetConfig.preset("tiny")), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["context_dim"] = 16  # cross-attention kv projections now mismatch
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shape mismatches \[.*to_kv.weight"):
        load_component(tmp_path)
    config["context_dim"], config["pooled_dim"] = 32, 8  # a layer the file lacks
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing \['pooled_proj.bias', 'pooled_proj.weight'\]"):
        load_component(tmp_path)


def test_config_errors(tmp_path):
    save_component(UNet(UNetConfig.preset("tiny")), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "chanels": [8]}))
    with pytest.raises(ValueError, match="unknown config keys \\['chanels'\\]"):
        load_component(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "type": "gan"}))
    with pytest.raises(ValueError, match="choose from"):
        load_component(tmp_path)
    with pytest.raises(ValueError, match="not a component type"):
        save_component(torch.nn.Linear(2, 2), tmp_path / "x")


def test_pretrained_text_encoder_is_saved_as_a_pointer(tmp_path):
    from t2i.models.text_encoder import PretrainedTextEncoder, PretrainedTextEncoderConfig

    enc = PretrainedTextEncoder(PretrainedTextEncoderConfig(max_length=20))
    save_component(enc, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    loaded = load_component(tmp_path)
    assert loaded.config.max_length == 20
    torch.testing.assert_close(loaded.encode(["a cat"]).pooled, enc.encode(["a cat"]).pooled)


def test_atomic_write_bytes_replaces_and_cleans_up(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two" and os.listdir(path.parent) == ["f.bin"]


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    """Not mkstemp's 0600: an exported model folder must be readable by the others who use it."""
    atomic_write_bytes(tmp_path / "atomic", b"x")
    (tmp_path / "plain").write_bytes(b"x")
    atomic, plain = ((tmp_path / name).stat().st_mode & 0o777 for name in ("atomic", "plain"))
    assert atomic == plain
