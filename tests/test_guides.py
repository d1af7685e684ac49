"""Guides (t2i/guides): noise-aware classifiers and noisy CLIPs that steer sampling by the
gradient of log p(prompt | x_t). Scale 0 is the unguided model; the gradient is the guide's own
(finite differences); a noise-aware classifier reads noisy samples a clean one cannot; the shapes
task's probability sums over exactly the placements a prompt allows; the recipe trains and
resumes exactly; the request carries guides by name and hash through params, PNG and CLI."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from argparse import Namespace

import pytest
import torch
from resume_check import assert_resume_repeats

from t2i.cli import main as t2i_main
from t2i.guidance import CFGDenoiser, GradientGuidance, Unconditional
from t2i.guides import tasks
from t2i.guides.guide import Guide, load_guide
from t2i.models.noisy_guide import NoisyGuide, NoisyGuideConfig
from t2i.params import read_png_params, read_png_request
from t2i.training import guide as recipe
from t2i.training.loop import StepRNG, train


class _Toy(torch.nn.Module):
    """A denoiser whose output depends on x and on its context."""

    def forward(self, x, sigma, context=None, context_mask=None):
        shift = 0.0 if context is None else context.mean(dim=(1, 2))[:, None, None, None]
        return 0.5 * x + shift


def _tiny_net(task="fashion", **kw) -> NoisyGuide:
    torch.manual_seed(0)
    c = NoisyGuideConfig(task=task, channels=(8, 16), groups=8, embed_dim=16, **kw)
    return NoisyGuide(c).eval()


# ---------------------------------------------------------------- the gradient


def test_scale_zero_is_the_unguided_denoiser():
    guide = Guide(_tiny_net(outputs=10), None, "")
    x, label = torch.randn(3, 1, 32, 32), torch.tensor([1, 5, 7])
    plain = _Toy()(x, 2.0)
    steered = guide.wrap(_Toy(), 0.0, "g.")(x, 2.0, **{"g.label": label})
    assert torch.equal(steered, plain)
    moved = guide.wrap(_Toy(), 3.0, "g.")(x, 2.0, **{"g.label": label})
    assert (moved - plain).abs().max() > 1e-3  # a scale that can fail: it does move


def test_gradient_is_the_guides_own_by_finite_differences():
    net = _tiny_net(outputs=10).double()
    guide = Guide(net, None, "")
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    sigma, label = torch.tensor([0.7, 0.7], dtype=torch.float64), torch.tensor([2, 9])
    scale = 1.5
    wrapped = GradientGuidance(
        _Toy(), lambda x, s, x0, y: guide.log_prob(x, s, label=y), scale, ("y",), False
    )
    grad = (wrapped(x, sigma, y=label) - _Toy()(x, sigma)) / (scale * 0.7**2)
    for i, pos in ((0, (0, 0, 5, 7)), (1, (0, 0, 16, 16)), (1, (0, 0, 31, 2))):
        e = torch.zeros_like(x)
        e[(i, *pos[1:])] = 1e-5
        with torch.no_grad():
            up, down = (guide.log_prob(x + d * e, sigma, label=label)[i] for d in (1, -1))
        assert float(grad[(i, *pos[1:])]) == pytest.approx(float(up - down) / 2e-5, rel=1e-5)


def test_guidance_zero_is_one_evaluation_of_the_unconditional_model():
    x = torch.randn(2, 1, 8, 8)
    cond = {"context": torch.ones(2, 3, 4), "context_mask": torch.ones(2, 3, dtype=torch.bool)}
    uncond = {"context": torch.zeros(1, 5, 4), "context_mask": torch.ones(1, 5, dtype=torch.bool)}
    zero = CFGDenoiser(_Toy(), uncond, scale=0.0)(x, 1.0, **cond)
    assert torch.allclose(Unconditional(_Toy(), uncond)(x, 1.0, **cond), zero)
    assert not torch.allclose(_Toy()(x, 1.0, **cond), zero)


# ---------------------------------------------------------------- noise-aware training


def _halves(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 8x8 images: the bright half on the left or on the right."""
    label = torch.randint(0, 2, (n,), generator=gen)
    x = -torch.ones(n, 1, 8, 8) + 0.1 * torch.randn(n, 1, 8, 8, generator=gen)
    left = label == 0
    x[left, :, :, :4] += 2
    x[~left, :, :, 4:] += 2
    return x, label


def _train_toy(clean: bool) -> NoisyGuide:
    torch.manual_seed(0)
    c = NoisyGuideConfig(channels=(16, 32), groups=8, embed_dim=16, outputs=2, image_size=8)
    net = NoisyGuide(c)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    sigmas = torch.logspace(-2, 1.3, 100)
    gen = torch.Generator().manual_seed(1)
    for step in range(150):
        x0, label = _halves(64, gen)
        x, sigma = recipe.noised(x0, sigmas, clean, StepRNG(0, step, 0, 64, 0, 64))
        loss = recipe.task_loss(net, x, sigma, {"label": label})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_the_noise_aware_classifier_reads_noisy_samples_the_clean_one_cannot():
    noisy, clean = _train_toy(False), _train_toy(True)
    x0, label = _halves(2000, torch.Generator().manual_seed(9))
    x = x0 + 4.0 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    sigma = torch.full((len(x),), 4.0)
    with torch.no_grad():
        acc = {
            k: float((n(x, sigma)[0].argmax(-1) == label).float().mean())
            for k, n in (("noisy", noisy), ("clean", clean))
        }
        low = float((clean(x0, torch.full((len(x),), 0.01))[0].argmax(-1) == label).float().mean())
    assert low > 0.95  # the clean one has learnt the task on clean images
    assert acc["noisy"] > 0.85 and acc["noisy"] > acc["clean"] + 0.15, acc


# ---------------------------------------------------------------- what prompts ask for


def test_fashion_label_names_one_class_its_plural_and_not_the_t_shirt():
    assert tasks.fashion_label("a photo of a sandal") == 5
    assert tasks.fashion_label("Sandals") == 5
    assert tasks.fashion_label("a t-shirt") == 0
    assert tasks.fashion_label("a shirt") == 6
    assert tasks.fashion_label("a pair of trousers") == 1 == tasks.fashion_label("trousers")
    for bad in ("a red circle", "a shirt and a bag"):
        with pytest.raises(ValueError, match="classes: t-shirt"):
            tasks.fashion_label(bad)


def test_shapes_placements_are_exactly_those_the_prompt_allows():
    cells, sizes, bg = tasks.placements("a red circle above a blue square")
    assert len(cells) == 27 and bg == -1  # row pairs (0,1), (0,2), (1,2) x 3 x 3 columns
    red, blue = 1 + tasks.PAIRS.index(("red", "circle")), 1 + tasks.PAIRS.index(("blue", "square"))
    for row in cells:
        assert sorted(row) == sorted([0] * 7 + [red, blue])
        assert row.index(red) // 3 < row.index(blue) // 3
    cells, sizes, bg = tasks.placements("a small green star in the centre on a black background")
    assert cells == [[0, 0, 0, 0, 1 + tasks.PAIRS.index(("green", "star")), 0, 0, 0, 0]]
    assert sizes[0][4] == 0 and bg == tasks.BACKGROUND_NAMES.index("black")
    with pytest.raises(ValueError, match="knows colours"):
        tasks.placements("a pink circle")
    with pytest.raises(ValueError, match="shapes grammar"):
        tasks.placements("draw two circles")


def test_shapes_log_prob_is_high_for_the_scene_and_low_for_another():
    scene_cells = [0] * 9
    scene_cells[1] = 1 + tasks.PAIRS.index(("red", "circle"))  # top middle
    scene_cells[7] = 1 + tasks.PAIRS.index(("blue", "square"))  # bottom middle
    logits = torch.full((1, tasks.SHAPES_CELL_OUTPUTS, 3, 3), -20.0)
    for k, c in enumerate(scene_cells):
        logits[0, c, k // 3, k % 3] = 20.0
    logits[0, tasks.CELL_CLASSES :] = 0.0  # sizes: undecided
    pooled = torch.zeros(1, 3)
    good = tasks.shapes_targets(["a red circle above a blue square"])
    bad = tasks.shapes_targets(["a red circle below a blue square"])
    assert float(tasks.shapes_log_prob(pooled, logits, **good)) > -1e-3
    assert float(tasks.shapes_log_prob(pooled, logits, **bad)) < -30
    sized = tasks.shapes_targets(["a small red circle above a blue square"])
    assert float(tasks.shapes_log_prob(pooled, logits, **sized)) == pytest.approx(-0.693, abs=1e-3)


# ---------------------------------------------------------------- the recipe and the request


def _train(tmp_path, name: str, resume: bool = False, **loop) -> dict:
    cfg = recipe.preset("tiny")
    cfg.loop = dataclasses.replace(cfg.loop, **loop)
    args = Namespace(init="fashion", data="fashion", preset="tiny", out=str(tmp_path / name))
    return train(recipe.build(cfg, args), cfg.loop, cfg.optim, tmp_path / name, resume, False)


def test_resume_from_a_checkpoint_repeats_the_straight_run(tmp_path):
    assert_resume_repeats(_train, tmp_path, steps=6, every=3)


@pytest.fixture(scope="module")
def fashion_guide(tmp_path_factory):
    out = tmp_path_factory.mktemp("guide") / "g_tiny"
    code = t2i_main(
        ["train", "guide", "--init", "fashion", "--data", "fashion", "--preset", "tiny"]
        + ["--out", str(out), "--no-progress"]
    )
    assert code == 0
    return out / "model"


def test_the_recipe_writes_a_guide_with_its_card(fashion_guide):
    guide = load_guide(fashion_guide, kind="classifier")
    assert guide.task == "fashion" and guide.net.config.name == "g_tiny"
    card = guide.card()
    assert card["metric"] == "accuracy" and set(card["by_sigma"]) == {
        f"{s:g}" for s in recipe.CARD_SIGMAS
    }
    with pytest.raises(ValueError, match="is a classifier guide, not a clip guide"):
        load_guide(fashion_guide, kind="clip")


def test_a_guide_loads_only_where_it_reads_the_samples(fashion_guide):
    from t2i.families import load

    with pytest.raises(ValueError, match="reads 1x32x32 samples"):
        load("shapes").load_guide(fashion_guide)
    with pytest.raises(ValueError, match="a guide folder has type 'noisy_guide'"):
        load_guide(fashion_guide.parent)  # the run folder: its config.json is the run's
    with pytest.raises(ValueError, match="not a guide folder"):
        load_guide(fashion_guide.parent / "checkpoints")


def test_cli_records_the_guide_and_from_needs_the_same_file(fashion_guide, tmp_path, capsys):
    out = tmp_path / "g.png"
    base = ["generate", "a sandal", "--model", "fashion", "--steps", "2", "--quiet"]
    assert (
        t2i_main(
            [
                *base,
                "--guidance",
                "0",
                "--out",
                str(out),
                "--guide",
                f"classifier:{fashion_guide}:4",
            ]
        )
        == 0
    )
    p = read_png_params(out)
    assert p.guidance == 0 and p.guides[0][:2] == ("g_tiny", 4.0) and len(p.guides[0][2]) == 12
    assert t2i_main(["generate", "--from", str(out), "--out", str(tmp_path / "b.png")]) == 2
    assert "guide 'g_tiny' is not loaded" in capsys.readouterr().err
    again = ["generate", "--from", str(out), "--out", str(tmp_path / "c.png"), "--quiet"]
    assert t2i_main([*again, "--guide", f"classifier:{fashion_guide}"]) == 0
    assert (tmp_path / "c.png").read_bytes()[-2000:] == out.read_bytes()[-2000:]
    assert t2i_main([*base, "--guide", f"classifier:{fashion_guide}:x"]) == 2
    assert "scale 'x' is not a number" in capsys.readouterr().err
    assert t2i_main([*base, "--guide", f"magic:{fashion_guide}"]) == 2
    assert "KIND classifier or clip" in capsys.readouterr().err


def test_a_guided_image_differs_and_is_its_own_seed_in_a_batch(fashion_guide):
    from t2i.families import load

    pipe = load("fashion")
    name = pipe.load_guide(fashion_guide)
    plain = pipe.params("a sandal", steps=3, guidance=0)
    steered = pipe.params("a sandal", steps=3, guidance=0, guides=[(name, 30.0)])
    a, b = pipe.generate(plain, 2), pipe.generate(steered, 2)
    assert (a - b).abs().max() > 0.05
    items = [
        dataclasses.replace(steered, prompt=q, seed=s) for q, s in (("a bag", 5), ("a sandal", 1))
    ]
    assert torch.allclose(pipe.generate_items(items)[1], b[1], atol=1e-5)
    with pytest.raises(ValueError, match="names none"):
        pipe.params("a red circle", guides=[(name, 1.0)])
    with pytest.raises(ValueError, match="scale must be a number in"):
        pipe.params("a bag", guides=[(name, float("nan"))])
    with pytest.raises(ValueError, match="not loaded"):
        pipe.params("a bag", guides=[("other", 1.0)])


def test_the_server_lists_its_guides_and_a_request_names_them(fashion_guide, tmp_path):
    from test_server import Running

    from t2i.families import load

    folder = tmp_path / "guides"
    shutil.copytree(fashion_guide, folder / "g_tiny")
    (folder / "notes").mkdir()  # not a guide folder: skipped, not fatal
    server = Running({"fashion": load("fashion")}, guide_dir=str(folder))
    try:
        status, _, body = server.request("GET", "/api/models")
        listed = json.loads(body)["models"][0]["guides"]
        assert status == 200 and listed["g_tiny"]["kind"] == "classifier"
        request = {"prompt": "a bag", "steps": 2, "guidance": 0, "guides": [["g_tiny", 5.0]]}
        status, _, body = server.request("POST", "/api/generate", request)
        assert status == 200, body
        answer = json.loads(body)["images"][0]
        assert answer["params"]["guides"][0][:2] == ["g_tiny", 5.0]
        image = base64.b64decode(answer["png_base64"])
        assert tuple(read_png_request(image)["guides"][0][:2]) == ("g_tiny", 5.0)
        status, _, body = server.request("POST", "/api/generate", {**request, "prompt": "a cat"})
        assert status == 400 and b"names none" in body
        bad = {**request, "guides": [["g_tiny"]]}
        status, _, body = server.request("POST", "/api/generate", bad)
        assert status == 400 and b"guides must be at most" in body
    finally:
        server.close()
