"""A distilled model as users load it: the LCM-LoRA's folder that adapts its teacher, the LoRA
alone on the teacher, and a full student that reads the guidance scale as an input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from test_training_cli import run_cli
from tiny_models import write_tiny_model

import t2i
from t2i.adapters import lora


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lcm")
    teacher = write_tiny_model(root / "teacher", steps=2)
    for preset in ("tiny", "tiny_full", "tiny_multistep"):
        run_cli(
            "lcm", "--teacher", str(teacher), "--data", "shapes", "--preset", preset,
            "--no-progress", "--loop.steps", "2", "--out", str(root / preset),
        )  # fmt: skip
    return root


def pixels(pipe, prompt="a red circle", **kw):
    return pipe.generate(pipe.params(prompt, seed=3, **kw), n=2)


def test_the_adapting_folder_is_its_teacher_with_the_lora_applied(runs):
    student = t2i.load(runs / "tiny" / "model")
    assert student.pinned_loras == {"lcm": 1.0}
    p = student.params("a red circle")
    assert (p.sampler, p.steps, p.guidance) == ("lcm", 2, 1.0)  # its card's defaults
    assert [name for name, _, _ in p.loras] == ["lcm"]
    teacher = t2i.load(runs / "teacher")
    teacher.load_lora(runs / "tiny" / "model" / "loras" / "lcm.safetensors")
    same = dict(sampler="lcm", steps=2, guidance=1.0)
    fused, applied = pixels(student), pixels(teacher, loras=[("lcm", 1.0)], **same)
    assert (fused - applied).abs().max() <= 2 / 255  # fused: the same up to float rounding
    # fused into the weights: another scale is refused until unfused, then it is the teacher
    with pytest.raises(ValueError, match="fused at 1.0: unfuse first"):
        pixels(student, loras=[("lcm", 0.0)])
    student.loras.unfuse()
    assert torch.equal(pixels(student, loras=[("lcm", 0.0)]), pixels(teacher, **same))


def test_a_multistep_student_samples_deterministically_on_its_segment_tops(runs):
    from t2i.schedules import discrete_sigmas, lcm_timesteps

    student = t2i.load(runs / "tiny_multistep" / "model")
    p = student.params("a red circle")
    assert (p.sampler, p.steps, p.guidance) == ("mcm", 2, 1.0)
    table = student.denoiser.sigmas
    tops = discrete_sigmas(table, 2, at=lcm_timesteps(2, len(table), 10))
    assert torch.equal(student.sigmas(2, "mcm"), tops)
    assert student.index["consistency"]["method"] == "mcm-lora"
    assert student.index["consistency"]["segments"] == 2
    # no fresh noise between steps: the Euler (DDIM) run on the same sigmas (at 2 steps the
    # trailing spacing picks the grid's tops too)
    assert torch.equal(student.sigmas(2, "euler"), tops)
    same = pixels(student, sampler="euler")
    assert torch.equal(pixels(student), same)
    assert not torch.equal(pixels(student, sampler="lcm"), same)


def test_a_lora_made_for_a_sampler_brings_its_settings_unless_the_request_gives_them(runs):
    teacher = t2i.load(runs / "teacher")
    name = teacher.load_lora(runs / "tiny" / "model" / "loras" / "lcm.safetensors")
    assert lora.read(teacher.loras.loaded[name].path)[0].sampling["name"] == "lcm"
    p = teacher.params("a red circle", loras=[(name, 1.0)])
    assert (p.sampler, p.steps, p.guidance) == ("lcm", 2, 1.0)
    p = teacher.params("a red circle", loras=[(name, 1.0)], steps=1, sampler="ddim")
    assert (p.sampler, p.steps) == ("ddim", 1)
    p = teacher.params("a red circle")  # without it: the teacher's own card
    assert (p.sampler, p.steps, p.guidance) == ("ddim", 2, 2.0)


def test_a_lora_steps_on_the_grid_it_was_distilled_on(runs, tmp_path):
    from dataclasses import replace

    from t2i.schedules import discrete_sigmas, lcm_timesteps

    meta, tensors = lora.read(runs / "tiny" / "model" / "loras" / "lcm.safetensors")
    index = json.loads((runs / "tiny" / "model" / "model_index.json").read_text())
    own = index["consistency"]["grid_steps"]
    assert meta.sampling["grid_steps"] == own != 100  # the run's grid, written in the file too
    fine = lora.save(
        tmp_path / "fine.safetensors",
        tensors,
        replace(meta, sampling={**meta.sampling, "steps": 4, "grid_steps": 100}),
    )
    teacher = t2i.load(runs / "teacher")
    name = teacher.load_lora(fine)
    p = teacher.params("a red circle", loras=[(name, 1.0)])
    table = teacher.denoiser.sigmas
    on_its_grid = discrete_sigmas(table, 4, at=lcm_timesteps(4, len(table), 100))
    on_the_run_grid = discrete_sigmas(table, 4, at=lcm_timesteps(4, len(table), own))
    got = teacher.sigmas(p.steps, p.sampler, teacher.lcm_grid(p))
    assert torch.equal(got, on_its_grid) and not torch.equal(got, on_the_run_grid)
    assert teacher.lcm_grid(teacher.params("a red circle")) is None  # no LoRA: the index's grid


@pytest.mark.parametrize("grid", [0, 1001, 2.5, "50"])
def test_a_lora_naming_a_grid_out_of_bounds_is_refused(grid):
    with pytest.raises(ValueError, match="grid_steps must be"):
        lora.check_sampling({"name": "lcm", "grid_steps": grid})


def test_the_cli_finds_the_lora_by_name_in_the_models_folder(runs, tmp_path):
    from t2i.cli import main

    model = tmp_path / "teacher"
    shutil.copytree(runs / "teacher", model)
    shutil.copytree(runs / "tiny" / "model" / "loras", model / "loras")
    out = tmp_path / "a.png"
    assert (
        main(
            [
                "generate",
                "a red circle",
                "--model",
                str(model),
                "--lora",
                "lcm",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert "Sampler: LCM" in Image.open(out).info["parameters"]


@pytest.mark.parametrize(
    "index,match",
    [
        ({"adapts": "."}, "adapts must name another model"),
        ({"adapts": "nowhere", "loras": {"lcm": 1}}, "unknown model"),
        ({"adapts": "../teacher", "loras": {}}, "loras must map"),
        ({"adapts": "../teacher", "loras": {"../x": 1}}, "LoRA name"),
        ({"adapts": "../teacher", "loras": {"lcm": 1e9}}, "scale must be"),
        ({"adapts": "../teacher", "loras": {"other": 1}}, "does not exist"),
    ],
)
def test_a_bad_adapting_folder_is_refused_with_the_reason(runs, tmp_path, index, match):
    folder = runs / f"bad{abs(hash(json.dumps(index))) % 10**8}"
    shutil.copytree(runs / "tiny" / "model", folder)
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        t2i.load(folder)


def test_a_full_student_reads_w_and_refuses_what_needs_cfg(runs):
    student = t2i.load(runs / "tiny_full" / "model")
    assert student.embeds_guidance and student.defaults["name"] == "lcm"
    with pytest.raises(ValueError, match="takes no negative prompt"):
        student.params("a red circle", negative="blue")
    with torch.no_grad():
        torch.nn.init.normal_(student.unet.guidance_proj.weight, std=0.5)
    assert not torch.equal(pixels(student, guidance=1.5), pixels(student, guidance=6.0))
    calls = []
    student.unet.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    pixels(student, guidance=4.0)
    assert calls == [2, 2]  # one pass of the batch per step, not CFG's two


def test_sampler_lcm_steps_on_the_distillation_grid(runs):
    pipe = t2i.load(runs / "teacher")
    sigmas = pipe.sigmas(4, "lcm")
    table = pipe.denoiser.sigmas
    assert torch.allclose(sigmas[:-1], table[[999, 759, 499, 259]]) and sigmas[-1] == 0
    with pytest.raises(ValueError, match="distillation grid's 50"):
        pipe.params("a red circle", sampler="lcm", steps=60)


def test_the_server_offers_the_student_with_its_own_defaults_and_draws_it(runs):
    from test_server import Running

    running = Running({"student": t2i.load(runs / "tiny" / "model")}, max_queue=4, max_batch=2)
    try:
        status, _, body = running.request("GET", "/api/models")
        model = json.loads(body)["models"][0] if status == 200 else body
        assert (model["sampler"], model["steps"], model["guidance"]) == ("lcm", 2, 1.0), model
        request = {"prompt": "a red circle", "model": "student"}
        status, _, out = running.post("/api/generate", request)
        assert status == 200, out
    finally:
        running.close()
