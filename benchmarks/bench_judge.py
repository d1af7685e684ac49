"""The `shapes` judge on ground-truth renders (per-category accuracy) and on images it must fail.

    python benchmarks/bench_judge.py            # 5,000 renders, about a minute on 2 cores
    python benchmarks/bench_judge.py --n 500    # quicker
    python benchmarks/bench_judge.py --concepts --n 2500   # scenes with teal, pink, diamond
Prints one table row per condition: the fraction of facts that hold in each category and the
fraction of images with every fact holding ("all"). Ground truth should be 1.0 (>= 0.995 required);
blank, noise, recoloured and reshaped images should have all = 0.

--concepts judges scenes that hold the concepts the training data never does
(t2i.data.shapes_concepts: one of teal, pink, diamond a scene, or a novel colour and the diamond,
on one object or two, with or without an object of the training world), and adds two conditions
that must fail: each novel concept drawn as a training look-alike (teal as green or blue, pink as
red or purple, the diamond as a square or a circle) and judged against the scene, and the scene
drawn as it is and judged against the look-alikes. On 5,000 such scenes (seed 2024) ground truth
is 1.0 in every category and all but the last row's `all` is 0; the last is 0.0018 (9 images):
the judge reads teal and pink only when a caption names them, and a large teal or pink square
on black then leaves a 1 px anti-aliased edge that is near green or purple, which the bbox
normalisation stretches to a square (a caption naming a novel concept is never fooled so).
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
from t2i.data.shapes_concepts import concept_scene

CONCEPT_SETS = [("teal",), ("pink",), ("diamond",), ("teal", "diamond"), ("pink", "diamond")]
LOOK_ALIKES = {
    "teal": ("green", "blue"),
    "pink": ("red", "purple"),
    "diamond": ("square", "circle"),
}


def conditions(scene, caption, img, i):
    """(name, image, target) for every condition of one ground-truth scene."""
    names, shapes = list(COLOURS), list(SHAPES)
    alike = {c: pair[i % 2] for c, pair in LOOK_ALIKES.items()}
    shift = {c: names[(k + 1) % len(names)] for k, c in enumerate(names)} | alike
    nxt = {s: shapes[(k + 1) % len(shapes)] for k, s in enumerate(shapes)} | alike
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
    novel = {o.colour for o in scene.objects} | {o.shape for o in scene.objects}
    if novel & set(LOOK_ALIKES):
        plain = replace(
            scene,
            objects=tuple(
                replace(o, colour=alike.get(o.colour, o.colour), shape=alike.get(o.shape, o.shape))
                for o in scene.objects
            ),
        )
        yield "novel drawn as look-alike", render_scene(plain, 64), scene
        yield "look-alike named for novel", img, plain


def scene_and_caption(args, cfg, i):
    """Ground truth i: a scene of the training world, or with --concepts one of novel concepts."""
    if not args.concepts:
        rng = scene_rng(args.seed, "all", i)
        scene = sample_scene(rng, cfg, "all")
        return scene, make_caption(scene, rng)
    rng = np.random.default_rng([args.seed, i])
    concepts = CONCEPT_SETS[i % len(CONCEPT_SETS)]
    together, extra = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    scene = concept_scene(rng, concepts, extra, together)
    return scene, make_caption(scene, rng)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--concepts", action="store_true", help="scenes with teal, pink, diamond")
    args = p.parse_args()
    cfg, verdicts, t0 = ShapesConfig(), {}, time.perf_counter()
    for i in range(args.n):
        scene, caption = scene_and_caption(args, cfg, i)
        for name, image, target in conditions(scene, caption, render_scene(scene, 64), i):
            verdicts.setdefault(name, []).append(judge(image, target))
    secs = time.perf_counter() - t0
    n_judged = sum(len(v) for v in verdicts.values())
    kind = "scenes with novel concepts" if args.concepts else "scenes"
    print(
        f"{args.n} {kind} at 64 px, {n_judged} judgements in {secs:.0f} s "
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
