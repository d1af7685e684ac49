"""Spatial controls (t2i/models/control.py, t2i/adapters/control.py): a fresh ControlNet or
T2I-Adapter changes nothing bit for bit, scale 0 is no control, start and end steps are
honoured, several controls add, and bad condition images or folders get clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import write_tiny_model

import t2i
from t2i.adapters import control as ctl
from t2i.adapters.lora import network_hash
from t2i.models.control import ControlConfig, build_control, unet_grid
from t2i.models.unet import UNet, UNetConfig
from t2i.params import GenerationParams

SIDE = 16


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("base") / "tiny", steps=4)


def make_control(pipe, arch: str, folder, name: str, trained: bool = False):
    u = pipe.unet
    grid = unet_grid(u.config, pipe.latent_size(SIDE, SIDE)[0])
    config = ControlConfig(arch=arch, unet=u.config, image_size=SIDE, grid=grid, hint_width=8)
    torch.manual_seed(1)
    net = build_control(config)
    if arch == "controlnet":
        net.init_from(u)
    if trained:  # as if trained: every zero convolution moved
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
    meta = {"name": name, "kind": "edges", "arch": arch, "base": "tiny"}
    return ctl.save(folder / name, net, {**meta, "base_hash": network_hash(u)}, torch.float32)


@pytest.fixture
def hint(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "edges.png"
    Image.fromarray(((rng.random((SIDE, SIDE)) > 0.7) * 255).astype(np.uint8)).save(path)
    return str(path)


def draw(pipe, **kw):
    return pipe.generate(pipe.params("a red circle", seed=3, **kw), 2)


@pytest.mark.parametrize("arch", ["controlnet", "t2i_adapter"])
def test_a_fresh_control_leaves_the_base_output_unchanged_bit_for_bit(model, tmp_path, hint, arch):
    pipe = t2i.load(model)
    name = pipe.load_control(make_control(pipe, arch, tmp_path, "c"))
    assert torch.equal(draw(pipe), draw(pipe, controls=[(name, hint)]))


def test_two_controls_at_scale_0_equal_none_and_at_scale_1_change_the_image(model, tmp_path, hint):
    pipe = t2i.load(model)
    a = pipe.load_control(make_control(pipe, "controlnet", tmp_path, "a", trained=True))
    b = pipe.load_control(make_control(pipe, "t2i_adapter", tmp_path, "b", trained=True))
    base = draw(pipe)
    assert torch.equal(base, draw(pipe, controls=[(a, hint, 0.0), (b, hint, 0.0)]))
    one, both = draw(pipe, controls=[(a, hint)]), draw(pipe, controls=[(a, hint), (b, hint)])
    assert (one - base).abs().max() > 1e-3 and (both - one).abs().max() > 1e-3


def test_start_and_end_select_the_steps_a_control_acts_on(model, tmp_path, hint):
    pipe = t2i.load(model)
    name = pipe.load_control(make_control(pipe, "controlnet", tmp_path, "c", trained=True))
    p = pipe.params("a red circle", controls=[(name, hint, 1.0, 0.25, 0.75)])
    sigmas = pipe.sigmas(p.steps, p.sampler)
    wrapped = pipe.controls.wrap(pipe.denoiser, p.controls, (SIDE, SIDE), sigmas, False)
    acting = [bool(wrapped.on(wrapped.step_of(sigmas[i : i + 1]))) for i in range(4)]
    assert acting == [False, True, True, False]  # steps 1 and 2 of 4: [0.25, 0.75)
    calls = []
    net = pipe.controls.get(name).net
    hook = net.register_forward_hook(lambda *_: calls.append(1))
    try:
        draw(pipe, controls=[(name, hint, 1.0, 0.25, 0.75)])
    finally:
        hook.remove()
    assert len(calls) == 2  # two steps, guidance batched in one call each


def test_guess_mode_keeps_the_control_off_the_unconditional_half(model, tmp_path, hint):
    pipe = t2i.load(model)
    name = pipe.load_control(make_control(pipe, "controlnet", tmp_path, "c", trained=True))
    plain = draw(pipe, controls=[(name, hint)])
    guess = draw(pipe, controls=[(name, hint)], guess_mode=True)
    assert (plain - guess).abs().max() > 1e-4
    with pytest.raises(ValueError, match="give a control"):
        pipe.params("x", guess_mode=True)


def test_the_image_parameters_record_the_controls_and_read_back(model, tmp_path, hint):
    pipe = t2i.load(model)
    name = pipe.load_control(make_control(pipe, "controlnet", tmp_path, "c"))
    image = pipe("a red circle", controls=[(name, hint, 0.5, 0.0, 0.5)])[0]
    p = GenerationParams.from_json(image.info["t2i"])
    assert p.controls == ((name, hint, 0.5, 0.0, 0.5, pipe.controls.get(name).digest),)


def bad_image(tmp_path, kind: str) -> str:
    path = tmp_path / f"{kind}.png"
    if kind == "size":
        Image.new("L", (SIDE * 2, SIDE)).save(path)
    elif kind == "colour":
        Image.new("RGB", (SIDE, SIDE), (255, 0, 0)).save(path)
    else:
        path.write_bytes(b"not an image at all")
    return str(path)


@pytest.mark.parametrize(
    "kind,message",
    [("size", "32x16; the image drawn is 16x16"), ("colour", "has colour"), ("text", "cannot")],
)
def test_bad_condition_images_get_clear_errors(model, tmp_path, kind, message):
    pipe = t2i.load(model)
    name = pipe.load_control(make_control(pipe, "controlnet", tmp_path, "c"))
    with pytest.raises(ValueError, match=message):
        pipe.params("a", controls=[(name, bad_image(tmp_path, kind))])


@pytest.mark.parametrize(
    "entry,message",
    [
        (("nope", "x.png"), "not loaded"),
        (("c", "{hint}", 5.0), r"scale must be a number in \[0, 4\]"),
        (("c", "{hint}", 1.0, 0.6, 0.4), "0 <= start < end <= 1"),
        (("c", "{hint}", 1.0, 0.5), r"\(name, image\[, scale\[, start, end\]\]\)"),
    ],
)
def test_bad_control_entries_name_what_is_allowed(model, tmp_path, hint, entry, message):
    pipe = t2i.load(model)
    pipe.load_control(make_control(pipe, "controlnet", tmp_path, "c"))
    entry = tuple(hint if v == "{hint}" else v for v in entry)
    with pytest.raises(ValueError, match=message):
        pipe.params("a", controls=[entry])


def test_a_control_trained_on_another_base_is_refused(model, tmp_path):
    pipe = t2i.load(model)
    other = t2i.load(write_tiny_model(tmp_path / "other", steps=4, guidance=3.0))
    with torch.no_grad():
        other.unet.conv_in.bias.add_(1.0)
    folder = make_control(other, "controlnet", tmp_path, "c")
    with pytest.raises(ValueError, match="not on this model"):
        pipe.load_control(folder)


def test_a_broken_control_folder_is_refused_before_loading(model, tmp_path):
    pipe = t2i.load(model)
    folder = make_control(pipe, "controlnet", tmp_path, "c")
    (folder / "config.json").write_text('{"type": "unet"}')
    with pytest.raises(ValueError, match="not a control's"):
        pipe.load_control(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a control folder"):
        pipe.load_control(tmp_path / "empty")


def test_the_model_folders_controls_load_by_name(model, tmp_path, hint):
    pipe = t2i.load(model)
    make_control(pipe, "t2i_adapter", model / "controls", "edges")
    try:
        again = t2i.load(model)
        assert again.controls.names() == ["edges"]
        assert again.params("a", controls=[("edges", hint)]).controls[0][0] == "edges"
    finally:
        import shutil

        shutil.rmtree(model / "controls")


def test_a_unet_reads_residuals_where_each_arch_puts_them():
    config = UNetConfig.preset("tiny", in_channels=3)
    unet = UNet(config).eval()
    x, t, ctx = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 500.0]), torch.randn(2, 4, 32)
    assert unet.skip_channels == [16, 16, 16, 32] and unet.level_ends == [0, 2]
    for arch in ("controlnet", "t2i_adapter"):
        cfg = ControlConfig(arch=arch, unet=config, image_size=8, grid=8, hint_width=8)
        net = build_control(cfg)
        residuals = net(x, t, torch.rand(2, 1, 8, 8), context=ctx)
        assert torch.equal(unet(x, t, ctx, control=residuals), unet(x, t, ctx))
        if arch == "controlnet":
            assert [s.shape[1] for s in residuals.skips] == unet.skip_channels
        else:
            assert sorted(residuals.down) == unet.level_ends


@pytest.mark.parametrize(
    "spec,entry",
    [
        ("edges:a.png", ("edges", "a.png")),
        ("edges:a.png:0.5", ("edges", "a.png", 0.5)),
        ("layout:dir:x/map.png:1:0:0.5", ("layout", "dir:x/map.png", 1.0, 0.0, 0.5)),
    ],
)
def test_the_control_flag_reads_numbers_from_the_end(spec, entry):
    from t2i.generate import control_flag

    assert control_flag(spec) == entry


def test_generate_applies_a_control_and_reproduces_it_from_the_png(model, tmp_path, hint):
    from t2i.cli import main
    from t2i.params import read_png_params

    pipe = t2i.load(model)
    folder = make_control(pipe, "controlnet", tmp_path, "edges", trained=True)
    out, plain, again = tmp_path / "c.png", tmp_path / "p.png", tmp_path / "a.png"
    flags = ["--model", str(model), "--control-model", str(folder), "--quiet"]
    assert main(["generate", "a red circle", *flags, "--control", f"edges:{hint}:0.7", "--out",
                 str(out)]) == 0  # fmt: skip
    assert read_png_params(out).controls[0][:3] == ("edges", hint, 0.7)
    assert main(["generate", "a red circle", "--model", str(model), "--out", str(plain)]) == 0
    assert Image.open(out).tobytes() != Image.open(plain).tobytes()
    assert main(["generate", "--from", str(out), *flags[2:], "--out", str(again)]) == 0
    assert Image.open(again).tobytes() == Image.open(out).tobytes()
    assert main(["generate", "a", "--model", str(model), "--control", "edges", "--quiet"]) == 2
