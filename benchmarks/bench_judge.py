"""The `shapes` judge on ground-truth renders (per-category accuracy) and on images it must fail.

    python benchmarks/bench_judge.py            # 5,000 renders, about a minute on 2 cores
    python benchmarks/bench_judge.py --n 500    # quicker
Prints one table row per condition: the fraction of facts that hold in each category and the
fraction of images with every fact holding ("all"). Ground truth should be 1.0 (>= 0.995 required);
blank, noise, recoloured and reshaped images should have all = 0.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
from PIL import ImageFilter

from t2i.data.judge import CATEGORIES, accuracy, judge
from t2i.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    ShapesConfig,
    make_caption,
    recolour,
    render_scene,
    sample_scene,
    scene_rng,
)


def conditions(scene, caption, img, i):
    """(name, image, target) for every condition of one ground-truth scene."""
    names, shapes = list(COLOURS), list(SHAPES)
    shift = {c: names[(k + 1) % len(names)] for k, c in enumerate(names)}
    nxt = {s: shapes[(k + 1) % len(shapes)] for k, s in enumerate(shapes)}
    rng = np.random.default_rng(i)
    blurred = np.asarray(img.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
    noisy = np.clip(blurred + rng.normal(0, 12, blurred.shape), 0, 255)
    reshaped = replace(scene, objects=tuple(replace(o, shape=nxt[o.shape]) for o in scene.objects))
    blank = np.full((64, 64, 3), BACKGROUNDS[scene.background], dtype=np.float32)
    yield "ground truth (scene)", img, scene
    yield "ground truth (caption)", img, caption
    yield "blur 0.8 px + noise 12", noisy, scene
    yield "blank background", blank, scene
    yield "uniform noise", rng.integers(0, 256, (64, 64, 3)).astype(np.float32), scene
    yield "recoloured", render_scene(recolour(scene, shift), 64), scene
    yield "reshaped", render_scene(reshaped, 64), scene


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args()
    cfg, verdicts, t0 = ShapesConfig(), {}, time.perf_counter()
    for i in range(args.n):
        rng = scene_rng(args.seed, "all", i)
        scene = sample_scene(rng, cfg, "all")
        caption = make_caption(scene, rng)
        for name, image, target in conditions(scene, caption, render_scene(scene, 64), i):
            verdicts.setdefault(name, []).append(judge(image, target))
    secs = time.perf_counter() - t0
    n_judged = sum(len(v) for v in verdicts.values())
    print(
        f"{args.n} scenes at 64 px, {n_judged} judgements in {secs:.0f} s "
        f"({1000 * secs / n_judged:.1f} ms each incl. rendering)\n"
    )
    print("| condition | " + " | ".join(CATEGORIES) + " | all |")
    print("|---" * (len(CATEGORIES) + 2) + "|")
    for name, vs in verdicts.items():
        acc = accuracy(vs)
        cells = [f"{acc[c]:.4f}" if c in acc else "-" for c in (*CATEGORIES, "all")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
