"""The autoregressive model through the pipeline, the CLI and `t2i eval`'s generation path:
loading, reproduction, batch equals single, and clear refusals of what only diffusion does."""

from __future__ import annotations

import pytest
import torch
from tiny_models import write_tiny_autoregressive_model

import t2i
from t2i.cli import main
from t2i.params import read_png_params
from t2i.token_pipeline import TokenPipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_autoregressive_model(tmp_path_factory.mktemp("ar"))


def test_loads_as_a_token_pipeline_and_draws_images(model_dir):
    pipe = t2i.load(model_dir)
    assert isinstance(pipe, TokenPipeline)
    calls = []
    images = pipe("a red circle", n=2, seed=3, callback=calls.append)
    assert [im.size for im in images] == [(16, 16)] * 2
    assert len(calls) == pipe.total_steps(pipe.params("a red circle")) == 64  # one per code
    assert images[0].tobytes() != images[1].tobytes()  # seeds 3 and 4 differ


def test_batch_equals_single_and_guidance_changes_the_image(model_dir):
    pipe = t2i.load(model_dir)
    items = [pipe.params(p, seed=s) for p, s in [("a red circle", 5), ("a blue square", 9)]]
    batch = pipe.generate_items(items)
    for i, p in enumerate(items):  # the same codes; the decoder's convolutions round by batch
        torch.testing.assert_close(batch[i], pipe.generate(p)[0], atol=1e-5, rtol=0)
    unguided = pipe.generate(pipe.params("a red circle", seed=5, guidance=1.0))
    assert not torch.equal(batch[0], unguided[0])


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"sampler": "ddim"}, "the only sampler is 'autoregressive'"),
        ({"steps": 20}, "one step per code, 64 for this model"),
        ({"size": (32, 32)}, "draws 16x16 only"),
        ({"guidance": -1}, "guidance must be in [0, 100]"),
        ({"guidance_interval": (0.1, 1.0)}, "needs a diffusion model"),
    ],
)
def test_what_only_diffusion_does_is_refused_clearly(model_dir, kw, message):
    with pytest.raises(ValueError) as err:
        t2i.load(model_dir).params("a red circle", **kw)
    assert message in str(err.value)


def test_cli_writes_a_png_that_reproduces_itself(model_dir, tmp_path):
    out = tmp_path / "a.png"
    assert (
        main(
            [
                "generate",
                "a blue circle",
                "--model",
                str(model_dir),
                "--seed",
                "7",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    params = read_png_params(out)
    assert (params.sampler, params.steps, params.seed) == ("autoregressive", 64, 7)
    again = tmp_path / "b.png"
    assert main(["generate", "--from", str(out), "--out", str(again), "--quiet"]) == 0
    assert out.read_bytes() == again.read_bytes()


def test_cli_refuses_a_diffusion_sampler_with_exit_2(model_dir, tmp_path, capsys):
    argv = ["generate", "a red circle", "--model", str(model_dir), "--sampler", "euler"]
    assert main([*argv, "--out", str(tmp_path / "x.png"), "--quiet"]) == 2
    assert "the only sampler is 'autoregressive'" in capsys.readouterr().err


def test_interpolation_and_inversion_say_they_need_a_diffusion_model(model_dir, tmp_path, capsys):
    argv = ["interpolate", "a red circle", "--model", str(model_dir)]
    assert main([*argv, "--seeds", "1", "2", "--out", str(tmp_path / "s.png")]) == 2
    assert "(autoregressive): interpolation walks a diffusion model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="model .* is autoregressive"):
        t2i.load(model_dir).invert(torch.zeros(1, 3, 16, 16))
