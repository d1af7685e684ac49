"""`t2i eval sweep`: quality vs steps for several samplers (and guidance scales), the classic
FID-vs-NFE picture, written as sweep.json, sweep.md, sweep.png (vs steps) and sweep_nfe.png
(vs network evaluations), drawn with Pillow.

    rows = sweep("runs/shapes64/model", SweepConfig(data="shapes", n=200), out_dir="sweep/")
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from PIL import Image, ImageDraw

from t2i.checkpoint import atomic_write_json
from t2i.evaluation.evaluate import evaluate, model_kind
from t2i.evaluation.suites import HEADLINE, EvalConfig, suite_for
from t2i.families import load
from t2i.samplers import get_sampler

DEFAULT_SAMPLERS = ("ddim", "euler", "heun", "dpmpp_2m", "ddpm")
DEFAULT_STEPS = (5, 10, 20, 50, 100)
COLOURS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


XLABEL = {"steps": "sampling steps", "nfe": "network evaluations per image (NFE)"}


@dataclass
class SweepConfig:
    data: str = "shapes"
    samplers: tuple[str, ...] = DEFAULT_SAMPLERS
    steps: tuple[int, ...] = DEFAULT_STEPS
    guidances: tuple[float | None, ...] = (None,)  # None: the model's default scale
    n: int = 200  # images per cell
    seed: int = 0
    batch_size: int = 32


def check_sweep(cfg: SweepConfig) -> None:
    if not cfg.samplers or not cfg.steps or not cfg.guidances:
        raise ValueError(f"need at least one sampler, step count and guidance, got {asdict(cfg)}")
    for name in cfg.samplers:
        get_sampler(name)
    for s in cfg.steps:
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 1000:
            raise ValueError(f"steps must be integers in [1, 1000], got {s!r}")


def sweep(
    model: str | Path, cfg: SweepConfig, out_dir: str | Path | None = None, log=print
) -> list[dict]:
    """One evaluate() per (guidance, sampler, steps) -> rows {sampler, steps, guidance, nfe, metric,
    value, real, seconds}; writes sweep.json, sweep.md, sweep.png and sweep_nfe.png into out_dir."""
    check_sweep(cfg)
    if model_kind(model) != "diffusion":
        raise ValueError(f"{model}: a sweep needs a diffusion model folder (with a unet)")
    metric, lower_better = HEADLINE[suite_for(cfg.data)]
    base = EvalConfig(
        data=cfg.data, n=cfg.n, seed=cfg.seed, batch_size=cfg.batch_size, heldout=False, grid=0
    )
    pipe = load(model)  # once: text embeddings stay cached across cells
    meta = {"model": str(model), **asdict(cfg), "metric": metric, "lower_is_better": lower_better}
    rows = []
    for guidance in cfg.guidances:
        for sampler in cfg.samplers:
            for steps in cfg.steps:
                cell = replace(base, sampler=sampler, steps=steps, guidance=guidance)
                r = evaluate(model, cell, pipeline=pipe)
                if "reference" in r and "reference" not in meta:  # a folder: said once
                    meta.update(extractor=r["extractor"], reference=r["reference"])
                    meta["warnings"] = r["warnings"]
                    for line in notes(meta) if log is not None else []:
                        log(line)
                m = r["metrics"][metric]
                row = dict(sampler=sampler, steps=steps, guidance=r["guidance"], nfe=r["nfe"])
                row.update(
                    metric=metric, value=m["value"], real=m["real"], seconds=r["timing"]["total_s"]
                )
                rows.append(row)
                if log is not None:
                    log(format_row(row))
                if out_dir is not None:  # after every cell: a stopped sweep keeps its rows
                    write_sweep(Path(out_dir), meta, rows)
    return rows


def write_sweep(out: Path, meta: dict, rows: list[dict]) -> None:
    """sweep.json (meta + rows), sweep.md (table), sweep.png / sweep_nfe.png (plots)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "sweep.json", {**meta, "rows": rows})
    (out / "sweep.md").write_text(
        "".join(f"{line}\n\n" for line in notes(meta)) + markdown_table(rows) + "\n"
    )
    better = "lower" if meta["lower_is_better"] else "higher"
    title = f"{meta['metric']} ({better} is better), {Path(meta['model']).name}, n = {meta['n']}"
    plot(rows, title).save(out / "sweep.png")
    plot(rows, title, x="nfe").save(out / "sweep_nfe.png")


def notes(meta: dict) -> list[str]:
    """What a folder sweep's figures compare (evaluate's report on a folder): the extractor, the
    reference images and any warning, one line each; none for shapes or fashion."""
    if "reference" not in meta:
        return []
    lines = [f"extractor: {meta['extractor']}", f"real images: {meta['reference']}"]
    return lines + [f"warning: {w}" for w in meta["warnings"]]


def format_row(row: dict) -> str:
    return (
        f"{row['sampler']:>10s} steps {row['steps']:>4d} guidance {row['guidance']:<5g} "
        f"NFE {row['nfe']:>4d}  {row['metric']} {row['value']} (real {row['real']})"
    )


def markdown_table(rows: list[dict]) -> str:
    """Rows: sampler (guidance), columns: steps; each cell the metric (NFE)."""
    steps = sorted({r["steps"] for r in rows})
    lines = [
        f"| {rows[0]['metric']} (NFE) | " + " | ".join(f"{s} steps" for s in steps) + " |",
        "|---" * (len(steps) + 1) + "|",
    ]
    for label, group in _series(rows).items():
        by = {r["steps"]: r for r in group}
        cells = [f"{by[s]['value']:.4g} ({by[s]['nfe']})" if s in by else "" for s in steps]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    real = rows[0]["real"]
    if real is not None:
        lines.append(f"| real images | {real:.4g} |" + " |" * (len(steps) - 1))
    return "\n".join(lines)


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    many = len({r["guidance"] for r in rows}) > 1
    out: dict[str, list[dict]] = {}
    for r in rows:
        label = f"{r['sampler']} g={r['guidance']:g}" if many else r["sampler"]
        out.setdefault(label, []).append(r)
    return out


def plot(rows: list[dict], title: str, x: str = "steps", size=(720, 480)) -> Image.Image:
    """Lines per sampler (and guidance): the metric vs `x` ("steps" or "nfe", network evaluations
    per image) on a log-x axis; a dashed grey line marks the real-image figure."""
    if x not in ("steps", "nfe"):
        raise ValueError(f"unknown x axis {x!r}; choose from ['nfe', 'steps']")
    w, h = size
    left, right, top, bottom = 70, 170, 30, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = [math.log(r[x]) for r in rows]
    ys = [r["value"] for r in rows] + ([rows[0]["real"]] if rows[0]["real"] is not None else [])
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    y0, y1 = y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0)

    def px(step: float, value: float) -> tuple[float, float]:
        fx = (math.log(step) - x0) / (x1 - x0)
        fy = (value - y0) / (y1 - y0)
        return left + fx * (w - left - right), h - bottom - fy * (h - top - bottom)

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    last = -1e9
    for s in sorted({r[x] for r in rows}):  # x ticks at the measured values
        tx, _ = px(s, y0)
        d.line([tx, h - bottom, tx, h - bottom + 5], fill="black")
        if tx - last >= 24:  # labels of close values (NFE 19 vs 20) would overprint
            d.text((tx - 8, h - bottom + 8), str(s), fill="black")
            last = tx
    for k in range(5):  # y ticks
        v = y0 + (y1 - y0) * k / 4
        _, y = px(math.exp(x0), v)
        d.line([left - 5, y, left, y], fill="black")
        d.text((5, y - 6), f"{v:.3g}", fill="black")
    d.text(((w - right + left) // 2 - 60, h - 20), f"{XLABEL[x]} (log scale)", fill="black")
    d.text((left, 8), title, fill="black")
    if rows[0]["real"] is not None:
        _, y = px(math.exp(x0), rows[0]["real"])
        for dx in range(left, w - right, 12):
            d.line([dx, y, dx + 6, y], fill=(120, 120, 120))
    _draw_series(d, rows, x, px, legend_x=w - right + 10, legend_y=top + 10)
    return img


def _draw_series(d: ImageDraw.ImageDraw, rows: list[dict], x: str, px, legend_x, legend_y) -> None:
    """Each series' line and dots through `px`, and the legend (with the real-image line)."""
    series = _series(rows)
    for k, (label, group) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts = [px(r[x], r["value"]) for r in sorted(group, key=lambda r: r[x])]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for cx, cy in pts:
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        ly = legend_y + 18 * k
        d.line([legend_x, ly + 6, legend_x + 20, ly + 6], fill=colour, width=3)
        d.text((legend_x + 26, ly), label, fill="black")
    if rows[0]["real"] is not None:
        ly = legend_y + 18 * len(series)
        d.line([legend_x, ly + 6, legend_x + 20, ly + 6], fill=(120, 120, 120))
        d.text((legend_x + 26, ly), "real images", fill="black")


def load_rows(path: str | Path) -> list[dict]:
    return json.loads(Path(path).read_text())["rows"]
