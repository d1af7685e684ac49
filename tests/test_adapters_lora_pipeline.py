"""LoRAs on a loaded model (t2i/adapters/lora_set.py through the generation protocol): loaded by
file or by `<lora:name:scale>` from a folder, applied per request, refused on another base, fused
and unfused exactly, recorded in the PNG so `--from` reproduces an image made with two; and
`t2i train lora` resumes bit for bit."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import write_tiny_model

import t2i
from t2i.adapters import lora
from t2i.params import PNG_KEY, GenerationParams


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny", steps=2)


def make_lora(pipe, folder: Path, name: str, seed: int, text: bool = False) -> Path:
    """A LoRA file for `pipe`'s exact weights, with random (trained-like) up weights."""
    networks = {"unet": pipe.unet, **({"text_encoder": pipe.text_encoder} if text else {})}
    cfg = lora.LoraConfig(rank=2)
    meta = lora.LoraMeta(name, "tiny", lora.network_hash(pipe.unet), 2, 2.0, list(cfg.targets), [])
    tensors = {}
    g = torch.Generator().manual_seed(seed)
    for prefix, network in networks.items():
        probe = copy.deepcopy(network)
        lora.attach(probe, name, cfg)
        for layer in lora.layers(probe).values():
            up = layer.adapters[name].up.weight
            with torch.no_grad():
                up.copy_(torch.randn(up.shape, generator=g) * 0.3)
        tensors.update(lora.adapter_state(probe, name, prefix))
        meta.networks.append(prefix)
    return lora.save(folder / f"{name}.safetensors", tensors, meta, dtype=torch.float32)


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def test_scale_zero_is_the_base_and_a_request_applies_its_loras(model_dir, tmp_path):
    pipe = t2i.load(model_dir)
    base = pixels(pipe("a red circle", seed=3)[0])
    name = pipe.load_lora(make_lora(pipe, tmp_path, "style", 0))
    assert name == "style"
    assert np.array_equal(pixels(pipe("a red circle", seed=3)[0]), base)  # not requested
    p = pipe.params("a red circle <lora:style:0>", seed=3)
    assert p.prompt == "a red circle" and p.loras[0][:2] == ("style", 0.0)
    assert np.array_equal(pixels(t2i.images.to_pil(pipe.generate(p))[0]), base)
    styled = pixels(pipe("a red circle <lora:style:1>", seed=3)[0])
    assert np.abs(styled - base).max() > 0
    assert np.array_equal(pixels(pipe("a red circle", seed=3)[0]), base)  # the next request: 0


def test_names_resolve_in_the_lora_folder_with_clear_errors(model_dir, tmp_path, monkeypatch):
    pipe = t2i.load(model_dir)
    make_lora(pipe, tmp_path, "teal", 1)
    with pytest.raises(ValueError, match="no LoRA folder is set"):
        pipe.params("a circle <lora:teal:1>")
    pipe.loras.folder = tmp_path
    p = pipe.params("a circle <lora:teal:0.5>")
    assert p.loras == (("teal", 0.5, lora.file_hash(tmp_path / "teal.safetensors")),)
    for prompt, message in [
        ("a circle <lora:nope:1>", "no LoRA 'nope' in"),
        ("a circle <lora:teal:x>", "scale 'x' is not a number"),
        ("a circle <lora:teal:99>", "scale must be a number in \\[-10, 10\\]"),
        ("a circle <lora:../x:1>", "LoRA name '../x' must be"),
        ("a <lora:teal:1> <lora:teal:0.5>", "given twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            pipe.params(prompt)


def test_a_lora_refuses_another_base(model_dir, tmp_path):
    pipe = t2i.load(model_dir)
    path = make_lora(pipe, tmp_path, "style", 0)
    other = write_tiny_model(tmp_path / "other", steps=2, guidance=3.0)
    with torch.no_grad():  # the same architecture, other weights (another fine-tune)
        other_pipe = t2i.load(other)
        other_pipe.unet.conv_in.weight.mul_(1.01)
    with pytest.raises(ValueError, match="was trained on 'tiny' .* not on this model"):
        other_pipe.load_lora(path)


def test_png_parameters_reproduce_an_image_made_with_two_loras(model_dir, tmp_path):
    pipe = t2i.load(model_dir)
    pipe.loras.folder = tmp_path
    make_lora(pipe, tmp_path, "style", 0)
    make_lora(pipe, tmp_path, "subject", 1, text=True)
    image = pipe("a red circle <lora:style:0.7> <lora:subject:1.2>", seed=5)[0]
    saved = GenerationParams.from_json(image.info[PNG_KEY])
    assert [entry[:2] for entry in saved.loras] == [("style", 0.7), ("subject", 1.2)]
    fresh = t2i.load(model_dir)  # a new process: LoRAs found again by name in the folder
    fresh.loras.folder = tmp_path
    kw = {k: v for k, v in json.loads(image.info[PNG_KEY]).items() if k not in ("prompt", "model")}
    kw["size"] = (kw.pop("width"), kw.pop("height"))
    p = fresh.params(saved.prompt, **kw)
    assert np.array_equal(pixels(t2i.images.to_pil(fresh.generate(p))[0]), pixels(image))
    (tmp_path / "style.safetensors").write_bytes(
        (tmp_path / "subject.safetensors").read_bytes()
    )  # the file changed since the image was made
    again = t2i.load(model_dir)
    again.loras.folder = tmp_path
    with pytest.raises(ValueError, match="the image was made with LoRA 'style'"):
        again.params(saved.prompt, **kw)


def test_fused_loras_match_applied_ones_and_unfuse_is_exact(model_dir, tmp_path):
    pipe = t2i.load(model_dir)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    for i, name in enumerate(("style", "subject")):
        pipe.load_lora(make_lora(pipe, tmp_path, name, i))
    prompt = "a red circle <lora:style:0.6> <lora:subject:0.4>"
    applied = pixels(pipe(prompt, seed=2)[0])
    pipe.loras.fuse({"style": 0.6, "subject": 0.4})
    assert np.abs(pixels(pipe(prompt, seed=2)[0]) - applied).max() <= 1
    pipe.loras.unfuse()
    for name in ("style", "subject"):
        pipe.loras.unload(name)
    after = pipe.unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_cli_applies_a_lora_and_from_reproduces_it(model_dir, tmp_path, capsys):
    from PIL import Image

    from t2i.cli import main

    pipe = t2i.load(model_dir)
    path = make_lora(pipe, tmp_path / "loras", "style", 0)
    out, again = tmp_path / "a.png", tmp_path / "b.png"
    base = ["generate", "a red circle", "--model", str(model_dir), "--quiet"]
    assert main([*base, "--lora", f"{path}:0.7", "--out", str(out)]) == 0
    params = GenerationParams.from_json(Image.open(out).text[PNG_KEY])
    assert [entry[:2] for entry in params.loras] == [("style", 0.7)]
    argv = ["generate", "--from", str(out), "--lora-dir", str(tmp_path / "loras")]
    assert main([*argv, "--quiet", "--out", str(again)]) == 0
    assert np.array_equal(pixels(Image.open(out)), pixels(Image.open(again)))
    assert main([*base, "--lora", str(tmp_path / "style.pt"), "--out", str(out)]) == 2
    assert "never unpickles" in capsys.readouterr().err
