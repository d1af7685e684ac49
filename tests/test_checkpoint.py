"""Model folders: bit-exact round trips, fp16, refusal of pickles / truncated files / bad shapes."""

import json
import os
import pickle
import time

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
    (tmp_path / "config.json").write_text(json.dumps({**config, "type": "stylegan"}))
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


# ---------------------------------------------------------------- hostile folders (issue 39)


def _tiny_unet_folder(tmp_path):
    save_component(UNet(UNetConfig.preset("tiny")), tmp_path / "unet")
    return tmp_path / "unet", json.loads((tmp_path / "unet" / "config.json").read_text())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channels": [20000, 20000]}, "channels"),  # was 6.4 GB allocated
        ({"layers_per_block": 10**6}, "layers_per_block"),
        ({"head_dim": 0}, "head_dim"),  # was a ZeroDivisionError
        ({"groups": "8"}, "groups"),
        ({"mid_attention": 1}, "mid_attention"),
        ({"dropout": float("nan")}, "dropout"),
    ],
)
def test_config_sizes_and_types_are_bounded_before_allocation(tmp_path, change, field):
    unet, config = _tiny_unet_folder(tmp_path)
    (unet / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=rf"config.json: {field}"):
        load_component(unet)


def test_text_encoder_dim_bounded_and_config_must_be_an_object(tmp_path):
    save_component(TextTransformer(TextTransformerConfig.preset("tiny")), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "dim": 10**9}))
    with pytest.raises(ValueError, match="config.json: dim"):
        load_component(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps([config]))
    with pytest.raises(ValueError, match="config.json: must be a JSON object"):
        load_component(tmp_path)


def test_component_paths_stay_inside_the_model_folder(tmp_path):
    from tests.tiny_models import write_tiny_model

    outside = write_tiny_model(tmp_path / "other")
    folder = write_tiny_model(tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    index["components"] = {"../other/unet": "unet", "text_encoder": "text_transformer"}
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="must name a subfolder"):
        load_model_folder(folder)
    index["components"] = {"unet": "unet", "text_encoder": "text_transformer"}
    (folder / "model_index.json").write_text(json.dumps(index))
    import shutil

    shutil.rmtree(folder / "unet")
    (folder / "unet").symlink_to(outside / "unet")  # a symlinked unet/
    with pytest.raises(ValueError, match="outside the model folder"):
        load_model_folder(folder)
    (folder / "unet").unlink()
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_bytes((outside / "unet" / "config.json").read_bytes())
    (folder / "unet" / "model.safetensors").symlink_to(outside / "unet" / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors.*outside the model folder"):
        load_model_folder(folder)


def test_huge_weights_file_refused_from_its_header(tmp_path):
    unet, _ = _tiny_unet_folder(tmp_path)
    weights = unet / "model.safetensors"
    with weights.open("r+b") as f:  # sparse: 20 GB on paper, nothing on disk
        f.truncate(20 << 30)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="padded: header promises"):
        load_component(unet)
    assert time.perf_counter() - start < 1.0  # the 20 GB were never read


def test_nan_weights_are_refused_naming_the_tensor(tmp_path):
    unet_module = UNet(UNetConfig.preset("tiny"))
    with torch.no_grad():
        unet_module.conv_in.weight[0, 0, 0, 0] = float("nan")
    save_component(unet_module, tmp_path)
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'conv_in.weight' holds NaN"):
        load_component(tmp_path)


def test_pretrained_text_encoder_never_unpickles_and_resolves_in_its_folder(tmp_path, monkeypatch):
    hf = tmp_path / "model" / "text_encoder" / "hf"
    hf.mkdir(parents=True)
    torch.save({"x": torch.zeros(1)}, hf / "pytorch_model.bin")
    (hf / "config.json").write_text("{}")
    te = tmp_path / "model" / "text_encoder"
    (te / "config.json").write_text(
        json.dumps({"type": "pretrained_text_encoder", "path": "hf", "max_length": 8})
    )
    with pytest.raises(ValueError, match="no model.safetensors"):
        load_component(te, root=tmp_path / "model")
    monkeypatch.chdir(tmp_path)  # a relative path never resolves against the working directory
    (te / "config.json").write_text(
        json.dumps({"type": "pretrained_text_encoder", "path": "../../x", "max_length": 8})
    )
    with pytest.raises(ValueError, match="outside the model folder"):
        load_component(te, root=tmp_path / "model")


def test_family_that_does_not_match_the_components_is_one_line(tmp_path):
    from t2i.families import load
    from tests.tiny_models import write_tiny_model

    folder = write_tiny_model(tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "family": "autoregressive"}))
    with pytest.raises(ValueError, match="model_index.json: components.transformer: the auto"):
        load(folder)


def test_every_size_field_of_every_component_has_a_bound():
    import dataclasses
    import typing

    from t2i.checkpoint import COMPONENT_TYPES
    from t2i.models.config_bounds import FLOAT_BOUNDS, INT_BOUNDS

    unbounded = []
    for _, config_cls in COMPONENT_TYPES.values():
        hints = typing.get_type_hints(config_cls)
        for f in dataclasses.fields(config_cls):
            text = str(hints[f.name])
            if ("int" in text and f.name not in INT_BOUNDS) or (
                "float" in text and f.name not in FLOAT_BOUNDS
            ):
                unbounded.append(f"{config_cls.__name__}.{f.name}")
    assert not unbounded


def test_cli_names_the_file_and_field_without_a_traceback(tmp_path):
    import subprocess
    import sys

    from tests.tiny_models import write_tiny_model

    folder = write_tiny_model(tmp_path / "m")
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "head_dim": 0}))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "t2i",
            "generate",
            "a red circle",
            "--model",
            str(folder),
            "--out",
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "config.json: head_dim" in out.stderr and "Traceback" not in out.stderr
