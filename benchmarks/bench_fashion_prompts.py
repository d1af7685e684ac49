"""Fashion prompts as people type them (issue 36): per-class prompt accuracy on the canonical
captions and on the held-out plural/synonym set, five prompts the old model got wrong, and the
diversity of one class's images against real ones.

All judged by the shipped Fashion-MNIST classifier (t2i/evaluation/extractors). With --n N:
    canonical   N images per class, the training captions (fashion_captions, templates in turn)
    heldout     N per class from fashion_eval_prompts(N // 2): N/2 plural + N/2 synonym prompts,
                every one in a sentence frame no training caption uses
    unseen      --unseen per class: names no training caption uses ('a cardigan', 'booties')
    specific    N images each of "shirt", "a shirt", "sandals", "a pair of sandals", "sneakers"
    diversity   per class: mean pairwise distance between the class's canonical images, in pixels
                (RMS, [-1, 1] units) and in classifier features (128-d, L2), divided by the same
                for 200 real test images of the class (1.0: as varied as real)
Image i of each set starts from seed + i (as `t2i eval`), so a command gives the same numbers.

    OMP_NUM_THREADS=1 python3 benchmarks/bench_fashion_prompts.py fashion --label bundled
    python3 benchmarks/bench_fashion_prompts.py runs/x/model --guidance 2 --label x_g2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import t2i
from t2i.data.fashion import (
    CLASSES,
    FashionMNIST,
    fashion_captions,
    fashion_eval_prompts,
    fashion_unseen_prompts,
)
from t2i.evaluation.classifier import load_classifier
from t2i.evaluation.evaluate import generate_batched
from t2i.evaluation.features import extract_features
from t2i.evaluation.metrics import pairwise_rms

SPECIFIC = ("shirt", "a shirt", "sandals", "a pair of sandals", "sneakers")
SPECIFIC_LABELS = (6, 6, 5, 5, 7)
REAL_PER_CLASS = 200
OUT_DIR = Path("docs/training/fashion_prompts")


def accuracy(preds: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
    mask = np.ones(len(labels), bool) if mask is None else mask
    return round(float((preds[mask] == labels[mask]).mean()), 4)


def real_by_class(seed: int) -> dict[int, torch.Tensor]:
    """REAL_PER_CLASS test images of each class, picked by seed."""
    test = FashionMNIST("test", image_size=32)
    rng = np.random.default_rng(seed)
    out = {}
    for label in range(len(CLASSES)):
        idx = rng.choice(np.flatnonzero(test.labels == label), REAL_PER_CLASS, replace=False)
        out[label] = torch.stack([test[int(i)]["image"] for i in idx])
    return out


def prompt_sets(n: int, unseen: int) -> dict[str, tuple[list[str], np.ndarray, list[str]]]:
    """set name -> (prompts, labels, kinds)."""
    canon = [(fashion_captions(c)[k % 4], c) for c in range(len(CLASSES)) for k in range(n)]
    held = fashion_eval_prompts(per_kind=n // 2)
    spec = [(p, c) for p, c in zip(SPECIFIC, SPECIFIC_LABELS) for _ in range(n)]
    sets = {
        "canonical": ([p for p, _ in canon], [c for _, c in canon], ["canonical"] * len(canon)),
        "heldout": ([p for p, _, _ in held], [c for _, c, _ in held], [k for _, _, k in held]),
        "specific": ([p for p, _ in spec], [c for _, c in spec], [p for p, _ in spec]),
    }
    if unseen:
        un = fashion_unseen_prompts(per_class=unseen)
        sets["unseen"] = ([p for p, _ in un], [c for _, c in un], ["unseen"] * len(un))
    return {k: (p, np.array(c), kinds) for k, (p, c, kinds) in sets.items()}


def per_class(preds: np.ndarray, labels: np.ndarray, mask=None) -> dict[str, float]:
    mask = np.ones(len(labels), bool) if mask is None else mask
    return {
        CLASSES[c]: accuracy(preds, labels, mask & (labels == c))
        for c in range(len(CLASSES))
        if (mask & (labels == c)).any()
    }


@torch.no_grad()
def run(args) -> dict:
    pipe = t2i.load(args.model)
    params = pipe.params(
        "",
        steps=args.steps,
        guidance=args.guidance,
        guidance_interval=args.guidance_interval,
        seed=args.seed,
        cads_noise=args.cads_noise,
        cads_interval=args.cads_interval,
    )
    clf = load_classifier()
    reals = real_by_class(args.seed)
    report = {
        "model": args.model,
        "n_per_class": args.n,
        "sampler": params.sampler,
        "steps": params.steps,
        "guidance": params.guidance,
        "guidance_interval": params.guidance_interval,
        "cads_noise": params.cads_noise,
        "cads_interval": params.cads_interval,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "real_per_class": REAL_PER_CLASS,
    }
    real_preds = {c: clf(x).argmax(-1).numpy() for c, x in reals.items()}
    report["real_accuracy"] = {
        CLASSES[c]: round(float((p == c).mean()), 4) for c, p in real_preds.items()
    }
    t0 = time.perf_counter()
    images = {}
    for name, (prompts, labels, kinds) in prompt_sets(args.n, args.unseen).items():
        x, _ = generate_batched(pipe, prompts, params, args.batch_size)
        images[name] = x
        preds = clf(x).argmax(-1).numpy()
        kinds = np.array(kinds)
        entry = {"n": len(prompts), "overall": accuracy(preds, labels)}
        if name == "specific":
            entry["per_prompt"] = {p: accuracy(preds, labels, kinds == p) for p in SPECIFIC}
            entry["drawn_as"] = {
                p: {
                    CLASSES[c]: int(k)
                    for c, k in enumerate(np.bincount(preds[kinds == p], minlength=10))
                    if k
                }
                for p in SPECIFIC
            }
        else:
            entry["per_class"] = per_class(preds, labels)
        if name == "heldout":
            for kind in ("plural", "synonym"):
                entry[kind] = accuracy(preds, labels, kinds == kind)
                entry[f"{kind}_per_class"] = per_class(preds, labels, kinds == kind)
            entry["examples"] = prompts[:: max(1, len(prompts) // 20)]
        report[name] = entry
    report["generate_s"] = round(time.perf_counter() - t0, 1)
    canon_labels = prompt_sets(args.n, 0)["canonical"][1]
    div = {}
    for c in range(len(CLASSES)):
        gen, real = images["canonical"][canon_labels == c], reals[c]
        f_gen, f_real = extract_features(clf, gen), extract_features(clf, real)
        div[CLASSES[c]] = {
            "pixels": round(pairwise_rms(gen) / pairwise_rms(real), 4),
            "features": round(
                pairwise_rms(torch.from_numpy(f_gen)) / pairwise_rms(torch.from_numpy(f_real)), 4
            ),
        }
    report["diversity"] = {
        "per_class": div,
        "pixels": round(float(np.mean([d["pixels"] for d in div.values()])), 4),
        "features": round(float(np.mean([d["features"] for d in div.values()])), 4),
    }
    return report


def table(r: dict) -> str:
    held, div = r["heldout"], r["diversity"]["per_class"]
    unseen = r.get("unseen", {}).get("per_class", {})
    cols = ("real", "canon", "held", "plur", "syn", "unseen", "div_px", "div_ft")
    lines = [f"{'class':18s} " + " ".join(f"{c:>6s}" for c in cols)]
    for name in CLASSES:
        lines.append(
            f"{name:18s} {r['real_accuracy'][name]:6.2f} {r['canonical']['per_class'][name]:6.2f} "
            f"{held['per_class'][name]:6.2f} {held['plural_per_class'][name]:6.2f} "
            f"{held['synonym_per_class'][name]:6.2f} {unseen.get(name, float('nan')):6.2f} "
            f"{div[name]['pixels']:6.2f} {div[name]['features']:6.2f}"
        )
    real = np.mean(list(r["real_accuracy"].values()))
    lines.append(
        f"{'all':18s} {real:6.2f} {r['canonical']['overall']:6.2f} "
        f"{held['overall']:6.2f} {held['plural']:6.2f} {held['synonym']:6.2f} "
        f"{r.get('unseen', {}).get('overall', float('nan')):6.2f} "
        f"{r['diversity']['pixels']:6.2f} {r['diversity']['features']:6.2f}"
    )
    lines.append(
        "specific: " + ", ".join(f"{p!r} {v:.2f}" for p, v in r["specific"]["per_prompt"].items())
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="bundled model name or model folder")
    ap.add_argument("--n", type=int, default=40, help="images per class per set, and per prompt")
    ap.add_argument("--unseen", type=int, default=10, help="unseen-name images per class (0: none)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--guidance-interval", default=None, help="LO,HI sigmas or 'all'")
    ap.add_argument("--cads-noise", type=float, default=None, help="CADS noise scale (0: off)")
    ap.add_argument("--cads-interval", default=None, help="CADS LO,HI sigmas")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=40)
    ap.add_argument(
        "--label", required=True, help="the JSON's name under docs/training/fashion_prompts"
    )
    args = ap.parse_args()
    if args.n < 2 or args.n % 2:
        raise ValueError(f"--n must be an even number >= 2, got {args.n}")
    if args.cads_interval:
        args.cads_interval = [float(v) for v in args.cads_interval.split(",")]
    gi = args.guidance_interval
    if gi and gi != "all":
        args.guidance_interval = tuple(float(v) for v in gi.split(","))
    report = run(args)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"{args.label}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print(f"generation {report['generate_s']} s; wrote {out}")


if __name__ == "__main__":
    main()
