"""Quality against training CPU time: the Würstchen-style emoji model against the single-stage
latent model (issue 31). Each point is a checkpoint of a run, exported as the run's end would
export it and judged by `t2i eval`'s `evaluate` (the evaluation CLIP: R-precision and FD, with
the real-image floors) at the model's default settings; its x is the run's own training wall time
at that step on one thread (the log's elapsed_s), so x is CPU time. A Würstchen point costs its
stage B run in full (the encoder stage C learns from is the final one) plus its stage C run to
that step. The latent cache both read is shared and not counted for either.

    OMP_NUM_THREADS=1 python3 benchmarks/bench_wuerstchen.py measure \\
        --single runs/wu/single:500,1000,1500,2000 --stage-b runs/wu/b \\
        --stage-c runs/wu/c:250,500,1000,1500 --data data_cache/emoji64 --n 200 \\
        --out docs/training/wuerstchen/bench.json
    python3 benchmarks/bench_wuerstchen.py plot --bench docs/training/wuerstchen/bench.json \\
        --out docs/training/wuerstchen/quality_vs_cpu.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from t2i.evaluation.emoji_clip import load_images, load_rows
from t2i.evaluation.evaluate import evaluate
from t2i.evaluation.suites import EvalConfig
from t2i.training.cli import recipe_module
from t2i.training.log import read_log
from t2i.training.state import load_checkpoint

METRICS = ("r_precision_emoji", "fd_emoji_clip")
COLOURS = {"single-stage": (200, 60, 40), "wuerstchen": (40, 90, 200)}


def run_seconds(run: Path, step: int) -> float:
    """The run's wall time up to `step` (one segment: the log's last elapsed_s at or before it)."""
    best = None
    for rec in read_log(run / "log.jsonl"):
        if "elapsed_s" in rec and rec.get("step", 0) <= step:
            best = float(rec["elapsed_s"])
    if best is None:
        raise ValueError(f"{run}: no logged time at or before step {step}")
    return best


def export_step(run: Path, step: int, out: Path) -> Path:
    found = run / "checkpoints" / f"ckpt-{step:06d}"
    tensors, meta = load_checkpoint(found)
    module = recipe_module(meta["recipe"])
    kw = {"run_dir": run, "dtype": "float32", "data": None, "ema": True}
    return module.export_checkpoint(found, tensors, meta, out, **kw)


def set_stage_c_guidance(folder: Path, scale: float) -> None:
    """Stage C samples with its own index's defaults (a request's settings reach stage B)."""
    path = folder / "prior" / "model_index.json"
    index = json.loads(path.read_text())
    index["sampler"]["guidance_scale"] = scale
    path.write_text(json.dumps(index))


def judge(folder: Path, data: str, n: int) -> dict:
    report = evaluate(folder, EvalConfig(data=data, n=n, seed=0, batch_size=32, grid=0))
    metrics = report["metrics"]
    return {m: {"value": metrics[m]["value"], "real": metrics[m].get("real")} for m in METRICS}


class Reconstructing:
    """Stage B alone as a generator for `evaluate`: each held-out caption's image redrawn from
    its own semantic grid (with the caption): the ceiling a perfect stage C would reach."""

    def __init__(self, pipe, data: str):
        rows = load_rows(data, "heldout")
        self.images = dict(zip((r["text"] for r in rows), load_images(data, rows)))
        self.pipe = pipe

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def generate_items(self, items, callback=None):
        images = torch.stack([self.images[p.prompt] for p in items])
        prompts = [p.prompt for p in items]
        return self.pipe.reconstruct(images, prompts, items[0].seed)


def ceiling(args) -> None:
    import t2i

    pipe = Reconstructing(t2i.load(args.stage_b), args.data)
    cfg = EvalConfig(data=args.data, n=args.n, seed=0, batch_size=32, grid=0)
    metrics = evaluate(args.stage_b, cfg, pipeline=pipe)["metrics"]
    row = {m: {"value": metrics[m]["value"], "real": metrics[m].get("real")} for m in METRICS}
    out = Path(args.out)
    bench = json.loads(out.read_text()) if out.is_file() else {}
    out.write_text(json.dumps({**bench, "stage_b_ceiling": row}, indent=1) + "\n")
    print(json.dumps(row))


def parse_run(spec: str) -> tuple[Path, list[int]]:
    path, _, steps = spec.partition(":")
    return Path(path), [int(s) for s in steps.split(",") if s]


def measure(args) -> None:
    out = Path(args.out)
    bench = json.loads(out.read_text()) if out.is_file() else {}
    rows = bench.get("points", [])
    done = {(r["family"], r["step"], r.get("c_guidance")) for r in rows}
    single, single_steps = parse_run(args.single) if args.single else (None, [])
    stage_c, c_steps = parse_run(args.stage_c) if args.stage_c else (None, [])
    b_seconds = 0.0
    if args.stage_b:
        b_run = Path(args.stage_b)
        b_seconds = run_seconds(b_run, 10**9)
    jobs = [("single-stage", single, s, 0.0) for s in single_steps]
    jobs += [("wuerstchen", stage_c, s, b_seconds) for s in c_steps]
    for family, run, step, extra in jobs:
        guidance = args.c_guidance if family == "wuerstchen" else None
        if (family, step, guidance) in done:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = export_step(run, step, Path(tmp) / "model")
            if family == "wuerstchen" and args.c_guidance is not None:
                set_stage_c_guidance(folder, args.c_guidance)
            figures = judge(folder, args.data, args.n)
        clock = Path(args.c_clock) if family == "wuerstchen" and args.c_clock else run
        seconds = extra + run_seconds(clock, step)
        row = {"family": family, "run": str(run), "step": step, "cpu_s": round(seconds, 1)}
        row = {**row, **({"c_guidance": guidance} if guidance is not None else {})}
        rows.append({**row, **figures})
        print(json.dumps(rows[-1]), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**bench, "n": args.n, "points": rows}, indent=1) + "\n")


def plot(args) -> None:
    bench = json.loads(Path(args.bench).read_text())
    points = [p for p in bench["points"] if "c_guidance" not in p]  # the cards' own settings
    panels = [panel(points, metric, bench["n"]) for metric in METRICS]
    sheet = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), "white")
    x = 0
    for p in panels:
        sheet.paste(p, (x, 0))
        x += p.width
    sheet.save(args.out)


def panel(points: list[dict], metric: str, n: int, size=(520, 380)) -> Image.Image:
    """metric against CPU hours, a line per family, the real images' figure dashed."""
    w, h = size
    left, right, top, bottom = 60, 20, 40, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = [p["cpu_s"] / 3600 for p in points]
    ys = [p[metric]["value"] for p in points]
    real = points[0][metric]["real"]
    ys_all = ys + ([real] if real is not None else [])
    x1 = max(xs) * 1.05
    y0, y1 = min(ys_all), max(ys_all)
    y0, y1 = y0 - 0.08 * (y1 - y0), y1 + 0.08 * (y1 - y0)

    def px(x: float, y: float) -> tuple[float, float]:
        fy = (y - y0) / (y1 - y0)
        return left + x / x1 * (w - left - right), h - bottom - fy * (h - top - bottom)

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for k in range(5):
        tx, _ = px(x1 * k / 4, y0)
        d.text((tx - 10, h - bottom + 6), f"{x1 * k / 4:.2f}", fill="black")
        _, ty = px(0, y0 + (y1 - y0) * k / 4)
        d.text((5, ty - 6), f"{y0 + (y1 - y0) * k / 4:.3g}", fill="black")
    d.text((w // 2 - 70, h - 22), "training CPU hours (one thread)", fill="black")
    better = "lower" if metric.startswith("fd") else "higher"
    d.text((left, 10), f"{metric} (n = {n}; {better} is better)", fill="black")
    if real is not None:
        _, ry = px(0, real)
        for dx in range(left, w - right, 12):
            d.line([dx, ry, dx + 6, ry], fill=(120, 120, 120))
        d.text((w - right - 90, ry - 14), "real images", fill=(120, 120, 120))
    for i, (family, colour) in enumerate(COLOURS.items()):
        mine = sorted((p for p in points if p["family"] == family), key=lambda p: p["cpu_s"])
        coords = [px(p["cpu_s"] / 3600, p[metric]["value"]) for p in mine]
        if len(coords) > 1:
            d.line(coords, fill=colour, width=2)
        for cx, cy in coords:
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        d.text((left + 8, top + 6 + 14 * i), family, fill=colour)
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--single", help="RUN:STEP,STEP,... of the single-stage diffusion run")
    m.add_argument("--stage-b", help="the wuerstchen_b run (its whole time counts)")
    m.add_argument("--stage-c", help="RUN:STEP,STEP,... of the wuerstchen_c run")
    m.add_argument("--data", default="data_cache/emoji64")
    m.add_argument(
        "--c-clock", help="the stage C run whose log times its steps (a rerun of its first steps)"
    )
    m.add_argument("--c-guidance", type=float, help="stage C's guidance scale (else its card's)")
    m.add_argument("--n", type=int, default=200)
    m.add_argument("--out", required=True)
    c = sub.add_parser("ceiling", help="stage B redrawing held-out images from their grids")
    c.add_argument("--stage-b", required=True, help="the wuerstchen_b model folder")
    c.add_argument("--data", default="data_cache/emoji64")
    c.add_argument("--n", type=int, default=200)
    c.add_argument("--out", required=True)
    p = sub.add_parser("plot")
    p.add_argument("--bench", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    {"measure": measure, "ceiling": ceiling, "plot": plot}[args.cmd](args)


if __name__ == "__main__":
    main()
