"""`t2i eval`: generate with a model folder, score the images, write a JSON report and a grid.

The metric suite follows the data (each metric beside the same figure for real images, its floor):
    shapes          exact-judge compositional accuracy (overall, per category) on the fixed prompt
                    set `shapes_eval_prompts` and on held-out colour-shape combinations
    fashion         prompt accuracy (shipped classifier) + fd_fashion / kid_fashion vs test images
    a folder        emoji CLIP score, CLIP R-precision and fd_emoji_clip vs its "heldout" split
An autoencoder model folder (no UNet) gets reconstruction PSNR, SSIM and the FD of reconstructions.

    report = evaluate("runs/shapes64/model", EvalConfig(data="shapes", n=200), out_dir="eval/")

Image i is generated from seed + i (batch composition fixed by batch_size), so the same command
gives the same numbers.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from t2i.checkpoint import INDEX_NAME, atomic_write_json, resolve_model
from t2i.evaluation.suites import (
    DEFINITIONS,
    SUITES,
    EvalConfig,
    autoencoder_eval,
    check_config,
    folder_notes,
    folder_reals,
    suite_for,
)
from t2i.families import adapted_model, load
from t2i.images import image_grid


def model_kind(folder: str | Path) -> str:
    """The folder's own "family" (autoregressive, draw, gan, unclip), else 'diffusion' (a UNet
    inside) or 'autoencoder'."""
    path = resolve_model(folder)
    index = json.loads((path / INDEX_NAME).read_text())
    if "adapts" in index:  # a folder of LoRAs over another model: that model's kind
        return model_kind(adapted_model(path, index))
    if isinstance(index.get("family"), str):  # a family that names itself (gan, unclip, ...)
        return index["family"]
    components = index.get("components", {})
    if "unet" in components:
        return "diffusion"
    if "transformer" in components:
        return "autoregressive"
    if "draw" in components:
        return "draw"
    if "gan" in components:
        return "gan"
    if "autoencoder" in components:
        return "autoencoder"
    raise ValueError(
        f"{path}: components {sorted(components)} have neither 'unet' nor 'autoencoder'"
    )


# ---------------------------------------------------------------- generation


@torch.no_grad()
def generate_batched(
    pipe, prompts: list[str], params, batch_size: int, progress: bool = False
) -> tuple[torch.Tensor, int]:
    """(N, C, H, W) images in [-1, 1] for N prompts (image i: seed params.seed + i), and the NFE
    (network evaluations per batch, every stage of a cascade counted), in batches of batch_size
    through the pipeline's own path."""
    out, calls = [], 0
    starts = range(0, len(prompts), batch_size)
    desc = f"{params.sampler} {params.steps} steps"
    for start in tqdm(starts, desc=desc, disable=not progress):
        batch = prompts[start : start + batch_size]
        seed = params.seed + start
        items = [replace(params, prompt=p, seed=seed + i) for i, p in enumerate(batch)]
        images, calls = pipe.counted(lambda items=items: pipe.generate_items(items), params)
        out.append(images)
    return torch.cat(out), calls


def write_card(model: str | Path, report: dict) -> Path:
    """Put a report's settings and headline figures into the model folder's data card
    (model_index.json "evaluation"), with the `t2i eval` command that reproduces them, so the
    figures travel with the weights."""
    index_path = resolve_model(model) / INDEX_NAME
    index = json.loads(index_path.read_text())
    r = report
    command = (
        f"t2i eval {model} --data {r['data']} --n {r['n']} --sampler {r['sampler']} "
        f"--steps {r['steps']} --guidance {r['guidance']} --seed {r['seed']} "
        f"--batch-size {r['batch_size']}"
    )
    interval = r.get("guidance_interval")
    command += " --guidance-interval " + (",".join(map(str, interval)) if interval else "all")
    if r.get("cads_noise"):
        command += f" --cads-noise {r['cads_noise']}"
        if r.get("cads_interval"):
            command += " --cads-interval " + ",".join(map(str, r["cads_interval"]))
    if r.get("guides"):
        raise ValueError("a model's card holds its own figures: evaluate it without --guide")
    card = {"command": command}
    keys = ("n", "sampler", "steps", "guidance", "guidance_interval", "seed")
    keys += tuple(k for k in ("cads_noise", "cads_interval") if r.get(k))
    card.update({k: r.get(k) for k in keys})
    for name, m in report["metrics"].items():
        card[name] = {k: m[k] for k in ("value", "real", "per_category") if k in m}
    index["evaluation"] = card
    atomic_write_json(index_path, index)
    return index_path


# ---------------------------------------------------------------- entry point


def evaluate(
    model: str | Path, cfg: EvalConfig, out_dir: str | Path | None = None, pipeline=None
) -> dict:
    """Generate (or reconstruct) cfg.n images, score them, write report.json + grid.png/.txt.

    pipeline: the model already loaded (a generator of `model`: t2i.load), e.g. by a sweep.

    Returns the report: model, data, suite, sampler, steps, guidance, seed, n, nfe, extractor,
    metrics {name: {value, real, ...}}, definitions {name: text}, timing {seconds}."""
    check_config(cfg)
    folder = resolve_model(model)
    kind = model_kind(folder)
    t0 = time.perf_counter()
    timing = {"generate_s": 0.0}
    report = {"model": str(model), "kind": kind, "data": cfg.data, "suite": suite_for(cfg.data)}
    if kind == "autoencoder":
        report["suite"] = "reconstruction"
        metrics, extractor, captions, images = autoencoder_eval(folder, cfg)
    else:
        pipe = pipeline or load(folder)
        metrics, extractor, captions, images = _generated_eval(pipe, cfg, report, timing)
    report.update(seed=cfg.seed, n=cfg.n, batch_size=cfg.batch_size, extractor=extractor)
    if suite_for(cfg.data) == "folder":  # what the figures can be trusted for, in the report
        uses_clip = extractor.startswith("emoji_clip")  # an autoencoder with n < 2 uses none
        report.update(folder_notes(cfg.data, folder_reals(cfg) if uses_clip else None))
    report["metrics"] = metrics
    report["definitions"] = {k: _definition(k) for k in metrics}
    timing["total_s"] = time.perf_counter() - t0
    report["timing"] = {k: round(v, 2) for k, v in timing.items()}
    if out_dir is not None:
        _write(Path(out_dir), report, images, captions, cfg.grid)
    return report


def _generated_eval(pipe, cfg: EvalConfig, report: dict, timing: dict) -> tuple:
    """The data's suite over the model's images; the sampling settings and NFE into report."""
    guides = [(pipe.load_guide(path, kind=kind), scale) for kind, path, scale in cfg.guides]
    params = pipe.params(
        "",
        sampler=cfg.sampler,
        steps=cfg.steps,
        guidance=cfg.guidance,
        guidance_interval=cfg.guidance_interval,
        cads_noise=cfg.cads_noise,
        cads_interval=cfg.cads_interval,
        seed=cfg.seed,
        guides=guides,
    )
    nfe = []

    def gen(prompts: list[str]) -> torch.Tensor:
        t = time.perf_counter()
        images, calls = generate_batched(pipe, prompts, params, cfg.batch_size, cfg.progress)
        timing["generate_s"] += time.perf_counter() - t
        nfe.append(calls)
        return images

    out = SUITES[report["suite"]](cfg, gen, params.width)
    report.update(
        sampler=params.sampler,
        steps=params.steps,
        guidance=params.guidance,
        guidance_interval=params.guidance_interval,
        nfe=nfe[0],
    )
    if params.guides:
        report["guides"] = [list(g) for g in params.guides]
    if params.cads_noise:
        report.update(cads_noise=params.cads_noise, cads_interval=params.cads_interval)
    return out


def _definition(name: str) -> str:
    base = next(k for k in sorted(DEFINITIONS, key=len, reverse=True) if name.startswith(k))
    return DEFINITIONS[base] + "; `real`: the same figure for real images (the floor)"


def _write(out: Path, report: dict, images: torch.Tensor, captions: list[str], grid: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if grid:
        k = min(grid, len(images))
        image_grid(images[:k]).save(out / "grid.png")
        (out / "grid.txt").write_text("".join(f"{i}: {c}\n" for i, c in enumerate(captions[:k])))
        report["grid"] = str(out / "grid.png")
    atomic_write_json(out / "report.json", report)


def format_report(report: dict) -> str:
    """Human-readable lines: each metric beside its real-image figure."""
    head = f"{report['model']} on {report['data']} ({report['suite']}), n = {report['n']}"
    if report["kind"] != "autoencoder":
        r = report
        head += f", {r['sampler']} {r['steps']} steps, guidance {r['guidance']}"
        if r.get("guidance_interval"):
            head += " on sigma in ({}, {}]".format(*r["guidance_interval"])
        if r.get("cads_noise"):
            head += f", CADS noise {r['cads_noise']}"
        head += f", NFE {r['nfe']}"
    lines = [head, f"extractor: {report['extractor']}"]
    if "reference" in report:
        lines.append(f"real images: {report['reference']}")
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    for name, m in report["metrics"].items():
        real = "" if m["real"] is None else f"   (real images: {m['real']})"
        lines.append(f"  {name:32s} {m['value']}{real}")
    lines.append(f"time: {report['timing']}")
    return "\n".join(lines)
