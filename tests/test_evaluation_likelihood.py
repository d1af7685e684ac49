"""`t2i eval MODEL --nll N`: bits per dimension of held-out images through the family's own
likelihood, the same figure as the bound called directly, and clear errors where a model has
none."""

from __future__ import annotations

import json

import pytest
import torch

import t2i
from t2i.cli import main as t2i_main
from t2i.evaluation.likelihood import heldout_images, likelihood_report
from t2i.likelihood import bits_per_dim
from t2i.schedules import DiscreteSchedule


def test_the_report_is_the_bound_of_the_held_out_images_per_variance():
    pipe = t2i.load("fashion")
    report = likelihood_report(pipe, "fashion", images=4, timesteps=3, batch_size=2)
    x0, captions = heldout_images("fashion", 32, 4)
    betas = DiscreteSchedule.from_dict(pipe.index["schedule"]).betas()
    gen = torch.Generator().manual_seed(0)
    cond = pipe.encode_text(captions[:2])
    want = bits_per_dim(pipe.denoiser, x0[:2], betas, 3, gen, "small", cond=cond).per_image
    first = pipe.likelihood(x0[:2], captions[:2], 3, torch.Generator().manual_seed(0))
    assert torch.allclose(first["small"], want)
    assert set(report["bits_per_dim"]) == {"small", "large"}
    assert 0 < report["bits_per_dim"]["large"]["value"] < 8  # 8 bits: the uniform model's


def test_the_cli_writes_the_report(tmp_path, capsys):
    out = tmp_path / "eval"
    code = t2i_main(
        ["eval", "fashion", "--data", "fashion", "--nll", "2", "--nll-timesteps", "2"]
        + ["--out", str(out)]
    )
    assert code == 0
    report = json.loads((out / "likelihood.json").read_text())
    assert report["estimator"].startswith("2 steps drawn") and "upper bound" in report["what"]
    assert "bits/dim (small" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("model", "argv", "match"),
    [
        ("fashion", ["--nll", "1"], "2 to 10000 images"),
        ("fashion", ["--nll", "2", "--nll-timesteps", "1"], "must be >= 2"),
        ("emoji", ["--nll", "2"], "latent model's bound"),
    ],
)
def test_what_has_no_likelihood_or_too_few_images_is_refused(model, argv, match, capsys):
    data = "fashion" if model == "fashion" else "shapes"
    assert t2i_main(["eval", model, "--data", data] + argv) != 0
    assert match in capsys.readouterr().err


def test_an_autoregressive_model_gives_the_exact_nll_of_its_codes_and_a_bound(tmp_path):
    """The codes' NLL from one teacher-forced pass is the sum of the step-by-step (cached)
    next-code probabilities the sampler draws from: no off-by-one between them."""
    from tiny_models import write_tiny_autoregressive_model

    from t2i.models.token_transformer import attention_mask

    pipe = t2i.load(write_tiny_autoregressive_model(tmp_path / "ar"))
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = (images * 127.5).round() / 127.5  # 8-bit values
    prompts = ["a red circle", "a blue square"]
    found = pipe.likelihood(images, prompts)
    codes = pipe.autoencoder.encode(images)[2].flatten(1)
    cond = pipe.encode_text(prompts)
    mask, keep = attention_mask(cond["context_mask"])
    caches = [{} for _ in pipe.transformer.blocks]
    token, nats = torch.full((2,), pipe.transformer.start_id), torch.zeros(2)
    with torch.no_grad():
        for i in range(codes.shape[1]):
            logits = pipe.transformer.step(token, i, cond["context"], mask, keep, caches)
            nats -= logits.log_softmax(-1).gather(1, codes[:, i : i + 1])[:, 0]
            token = codes[:, i]
    want = nats / (images[0].numel() * torch.log(torch.tensor(2.0)))
    assert torch.allclose(found["codes"], want, rtol=1e-4)
    assert bool((found["bound"] > found["codes"]).all())
