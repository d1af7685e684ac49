"""Few-step generation by latent consistency distillation (t2i/training/lcm.py), measured.

speed: seconds per image of a teacher at its card's settings (20 guided steps) and of its
distilled student at 1, 2, 4 and 8 steps, at batch 1 and 8, in one process on idle cores; the
speed-up is the ratio within the run.

    python3 benchmarks/bench_lcm.py speed --teacher shapes --student shapes-lcm
    python3 benchmarks/bench_lcm.py speed --teacher emoji --student emoji-lcm --repeats 3

concept: an LCM-LoRA on a LoRA fine-tune of its teacher (issue 28's teal concept on `shapes`):
the concept's prompts judged exactly, the fine-tune alone at the teacher's 20 guided steps
against the fine-tune with the LCM-LoRA at 1, 2, 4 and 8 steps.

    python3 benchmarks/bench_lcm.py concept --teacher shapes --student shapes-lcm \\
        --concept-lora runs/adapters/lora-teal/model/teal.safetensors --concept teal

plot: the sweeps of a teacher and its student (`t2i eval sweep`, one sweep.json each) on the
same axes, quality against steps.

    t2i eval sweep shapes --data shapes --n 200 --sampler ddim,dpmpp_2m --steps 2,4,8,20 \
        --out runs/lcm/sweep_teacher
    t2i eval sweep shapes-lcm --data shapes --n 200 --sampler lcm --steps 1,2,4,8 \
        --out runs/lcm/sweep_student
    python3 benchmarks/bench_lcm.py plot --sweeps runs/lcm/sweep_teacher runs/lcm/sweep_student \
        --out docs/samples/lcm_shapes_sweep.png

grid: rows of the teacher at its card's settings and the student at 1, 2 and 4 steps, the same
prompts and seeds in every row (prompt i, seed i).

    python3 benchmarks/bench_lcm.py grid --teacher shapes --student shapes-lcm \
        --prompts "a red circle" "a blue square above a green star" --out grid.png

Prints one JSON line per row and writes them to --out when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from timing import median_seconds  # benchmarks/timing.py, beside this script

import t2i

STUDENT_STEPS = (1, 2, 4, 8)


def seconds_per_image(pipe, p, batch: int, repeats: int) -> float:
    """Median over `repeats` calls of one batch (after one warm-up call), per image."""
    return median_seconds(lambda: pipe.generate(p, n=batch), repeats) / batch


def speed(args) -> list[dict]:
    teacher, student = t2i.load(args.teacher), t2i.load(args.student)
    prompt = args.prompt
    cases = [("teacher", teacher, teacher.params(prompt))]
    cases += [(f"student {n}", student, student.params(prompt, steps=n)) for n in STUDENT_STEPS]
    rows = []
    for batch in (1, 8):
        base = None
        for name, pipe, p in cases:
            s = seconds_per_image(pipe, p, batch, args.repeats)
            base = base or s
            row = {"model": args.teacher, "case": name, "batch": batch, "steps": p.steps}
            row.update(sampler=p.sampler, guidance=p.guidance, s_per_image=round(s, 4))
            row["speedup"] = round(base / s, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def concept(args) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_adapters import draw, score  # the personalisation benchmark's judge

    from t2i.data.shapes_concepts import concept_prompts

    prompts = concept_prompts(args.concept, args.n)
    rows = []
    tuned = t2i.load(args.teacher)
    tuned.load_lora(args.concept_lora, "concept")
    cases = [("fine-tune, teacher's 20 guided steps", tuned, {})]
    student = t2i.load(args.student)
    student.load_lora(args.concept_lora, "concept")
    cases += [(f"fine-tune + LCM-LoRA, {n} steps", student, {"steps": n}) for n in STUDENT_STEPS]
    for name, pipe, kw in cases:
        images = draw(pipe, prompts, "<lora:concept:1>", **kw)
        row = {"case": name, **score(images, prompts, (args.concept,))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def grid(args) -> None:
    from t2i.images import image_grid

    teacher, student = t2i.load(args.teacher), t2i.load(args.student)
    rows = [(teacher, {})] + [(student, {"steps": n}) for n in (1, 2, 4)]
    images = []
    for pipe, kw in rows:
        items = [pipe.params(p, seed=i, **kw) for i, p in enumerate(args.prompts)]
        images.append(pipe.generate_items(items))
    image_grid(torch.cat(images), cols=len(args.prompts)).save(args.out)
    print(f"wrote {args.out}: rows teacher (card), student 1, 2, 4 steps")


def plot(args) -> None:
    from t2i.evaluation.sweep import load_rows, plot

    rows = [row for folder in args.sweeps for row in load_rows(Path(folder) / "sweep.json")]
    # against steps: a sweep counts a CFG step (one batched call of 2B rows) as one evaluation,
    # so its NFE axis would hide the teacher's doubled cost; time per image is in `speed`
    plot(rows, f"{rows[0]['metric']}: teacher and LCM student").save(args.out)
    print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["speed", "concept", "plot", "grid"])
    ap.add_argument("--prompts", nargs="+", help="grid: one column per prompt")
    ap.add_argument("--teacher")
    ap.add_argument("--student")
    ap.add_argument("--sweeps", nargs="+", help="plot: sweep folders (each with sweep.json)")
    ap.add_argument("--prompt", default="a red circle above a blue square")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--concept-lora")
    ap.add_argument("--concept", default="teal")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.what in ("plot", "grid"):
        return plot(args) if args.what == "plot" else grid(args)
    torch.manual_seed(0)
    rows = speed(args) if args.what == "speed" else concept(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
