"""Guidance by a separate network against classifier-free guidance, on one model with the same
prompts and seeds (t2i/guides, `t2i train guide`).

Each setting is one `t2i eval` run (the evaluation networks judge: the fashion evaluation
classifier, the shapes judge, the emoji evaluation CLIP; never the guide that steered):

    unguided              --guidance 0 (the unconditional model: the prompt reaches no network)
    classifier s / clip s --guidance 0 --guide KIND:DIR:s (Dhariwal & Nichol; GLIDE)
    cfg w                 --guidance w
    cfg w + classifier s  both

    python3 benchmarks/bench_guidance.py --model fashion --data fashion --n 500 \\
        --guide classifier=runs/g_fashion/model --guide clean=runs/g_fashion_clean/model \\
        --scales 1,3,10 --cfg 1,3 --combine 3 --out runs/bench_guidance/fashion

Writes results.json (one row per setting: the suite's figures, seconds per image, network
evaluations per image) and grid.png (the first 8 prompts with seeds 0..7, one row per setting).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from PIL import Image, ImageDraw

from t2i.evaluation.evaluate import EvalConfig, evaluate
from t2i.families import load

HEADLINE = {  # suite -> (metric, which figure)
    "fashion": ("prompt_accuracy", "fd_fashion"),
    "shapes": ("compositional_accuracy_fixed", None),
    "folder": ("r_precision_emoji", "fd_emoji_clip"),
}


def settings(args) -> list[tuple[str, float, list]]:
    """(label, CFG scale, [(kind, folder, scale)]) of every run."""
    guides = [spec.split("=", 1) for spec in args.guide]
    out = [("unguided", 0.0, [])]
    for label, folder in guides:
        kind = "clip" if label.startswith("clip") else "classifier"
        out += [(f"{label} {s:g}", 0.0, [(kind, folder, s)]) for s in args.scales]
    out += [(f"cfg {w:g}", w, []) for w in args.cfg]
    combined = [(label, f) for label, f in guides if label in (args.combine_guides or [label])]
    for w in args.combine:
        for label, folder in combined:
            kind = "clip" if label.startswith("clip") else "classifier"
            out += [(f"cfg {w:g} + {label} {s:g}", w, [(kind, folder, s)]) for s in args.scales]
    return out


def run(args) -> list[dict]:
    pipe = load(args.model)
    rows, sheets = [], []
    for label, w, guides in settings(args):
        cfg = EvalConfig(data=args.data, n=args.n, guidance=w, heldout=False, grid=8)
        cfg.guides, cfg.steps, cfg.batch_size = tuple(guides), args.steps, args.batch_size
        t0 = time.perf_counter()
        folder = Path(args.out) / "runs" / slug(label)
        report = evaluate(args.model, cfg, out_dir=folder, pipeline=pipe)
        row = {
            "setting": label,
            "cfg": w,
            "guides": report.get("guides", []),
            "seconds_per_image": round(report["timing"]["generate_s"] / args.n, 4),
            "nfe": report["nfe"],
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        for name, m in report["metrics"].items():
            row[name], row[f"{name}_real"] = m["value"], m["real"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        sheets.append((label, Image.open(folder / "grid.png").convert("RGB")))
    labelled_rows(sheets).save(Path(args.out) / "grid.png")
    return rows


def labelled_rows(sheets: list[tuple[str, Image.Image]], margin: int = 150) -> Image.Image:
    """Each setting's grid (the first 8 prompts, seeds 0..7: the same in every row) with its
    label on the left."""
    w, h = sheets[0][1].size
    out = Image.new("RGB", (margin + w, h * len(sheets)), "white")
    draw = ImageDraw.Draw(out)
    for i, (label, sheet) in enumerate(sheets):
        out.paste(sheet, (margin, i * h))
        draw.text((4, i * h + h // 2 - 5), label, fill="black")
    return out


def slug(label: str) -> str:
    return label.replace(" + ", "_").replace(" ", "-")


def markdown(rows: list[dict], suite: str) -> str:
    metric, second = HEADLINE[suite]
    head = f"| setting | {metric} |" + (f" {second} |" if second else "") + " s / image | NFE |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["setting"], f"{r[metric]:.3f}"]
        cells += [f"{r[second]:.2f}"] if second else []
        cells += [f"{r['seconds_per_image']:.3f}", str(r["nfe"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--guide", action="append", default=[], metavar="LABEL=DIR")
    ap.add_argument("--scales", type=floats, default=[1.0, 3.0, 10.0])
    ap.add_argument("--cfg", type=floats, default=[1.0, 3.0])
    ap.add_argument("--combine", type=floats, default=[], help="CFG scales to add each guide to")
    ap.add_argument("--combine-guides", nargs="*", help="labels of the guides --combine adds")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = run(args)
    from t2i.evaluation.suites import suite_for

    suite = suite_for(args.data)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(markdown(rows, suite))


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


if __name__ == "__main__":
    main()
