"""Personalisation on concepts `shapes` never saw (teal, pink, diamond): LoRA and textual inversion
trained on a user's kind of folder (about 50 captioned images each), judged exactly.

For each concept: the base model, a LoRA and a textual-inversion word on prompts that use the
concept (share of images entirely right, and the concept's own fact: its colour or shape); the
base model's own fixed prompts with the adapter applied (retention); training time and file
size. Then two concepts in one image ("a teal diamond"): the two LoRAs applied together (the same
weights as their weighted-sum merge at those scales), a weighted-sum merge at half scale each,
gradient fusion (t2i/adapters/merge.py), and the two inversion words together.

    python3 benchmarks/bench_adapters.py --out runs/adapters          # about 25 minutes on 2 cores
    python3 benchmarks/bench_adapters.py --steps 200 --n 20 --retention 40   # a quick look

Writes `results.json` and `grid.png` (one row per method, concept prompts) in --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import t2i
from t2i.adapters import merge
from t2i.cli import main as t2i_main
from t2i.data.judge import accuracy, judge
from t2i.data.shapes import NOVEL_COLOURS, shapes_eval_prompts
from t2i.data.shapes_concepts import concept_prompts, write_concept_folder
from t2i.images import image_grid

INIT_WORD = {"teal": "blue", "pink": "red", "diamond": "square"}  # textual inversion starts here


def train(kind: str, concept: str, folder: Path, out: Path, steps: int) -> tuple[Path, float]:
    """Train one adapter with the CLI as a user would; (its file, seconds)."""
    run = out / f"{kind}-{concept}"
    args = ["--init", "shapes", "--data", str(folder), "--out", str(run), "--no-progress"]
    args += ["--loop.steps", str(steps), "--loop.sample_every", "0"]
    args += ["--cache_dir", str(out / "cache")]
    if kind == "lora":
        args += ["--name", concept]
    else:
        args += ["--token", concept, "--init_word", INIT_WORD[concept]]
    start = time.perf_counter()
    recipe = "lora" if kind == "lora" else "textual_inversion"
    if (run / "model" / f"{concept}.safetensors").is_file():
        return run / "model" / f"{concept}.safetensors", float("nan")  # trained before
    code = t2i_main(["train", recipe, *args])
    if code != 0:
        raise RuntimeError(f"training {kind} {concept} exited {code}")
    return run / "model" / f"{concept}.safetensors", time.perf_counter() - start


def draw(pipe, prompts: list[str], suffix: str = "", batch: int = 25, **request) -> list:
    """One image per prompt, image i from seed i; `suffix` appended (LoRA tags); `request`: the
    request's other settings (steps, sampler, ...)."""
    images = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        items = [
            pipe.params(f"{p} {suffix}".strip(), seed=start + i, **request)
            for i, p in enumerate(chunk)
        ]
        images.append(pipe.generate_items(items))
    return list(torch.cat(images))


def score(images: list, prompts: list[str], concept_facts: tuple[str, ...] = ()) -> dict:
    """Share of images entirely right, per category, and the concept's own facts."""
    verdicts = [judge(x, p) for x, p in zip(images, prompts)]
    out = {k: round(v, 3) for k, v in accuracy(verdicts).items()}
    for concept in concept_facts:
        kind = "colour" if concept in NOVEL_COLOURS else "shape"
        want = f"a {concept} object" if kind == "colour" else f"a {concept}"
        held = [holds for v in verdicts for cat, desc, holds in v.facts if desc == want]
        out[concept] = round(sum(held) / max(len(held), 1), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/adapters")
    ap.add_argument("--concepts", nargs="+", default=["teal", "diamond"])
    ap.add_argument("--images", type=int, default=50, help="training images per concept")
    ap.add_argument("--steps", type=int, default=1000, help="training steps per adapter")
    ap.add_argument("--n", type=int, default=100, help="concept prompts judged")
    ap.add_argument("--retention", type=int, default=200, help="fixed prompts judged")
    args = ap.parse_args()
    out = Path(args.out)
    results: dict = {"settings": vars(args), "concepts": {}}
    base = t2i.load("shapes")
    fixed = shapes_eval_prompts(args.retention)
    results["base_fixed"] = score(draw(base, fixed), fixed)
    print("base on its fixed prompts", results["base_fixed"])
    rows, files = [], {}
    for concept in args.concepts:
        folder = write_concept_folder(out / "data" / concept, concept, args.images)
        prompts = concept_prompts(concept, args.n)
        row = {"base": score(draw(base, prompts), prompts, (concept,))}
        for kind in ("lora", "ti"):
            path, seconds = train(kind, concept, folder, out, args.steps)
            files[(kind, concept)] = path
            pipe = t2i.load("shapes")
            if kind == "lora":
                pipe.load_lora(path)
                tag = f"<lora:{concept}:1>"
            else:
                pipe.load_embedding(path)
                tag = ""
            images = draw(pipe, prompts, tag)
            rows.append(images[:8])
            row[kind] = score(images, prompts, (concept,))
            row[kind]["train_seconds"] = round(seconds, 1)
            row[kind]["file_bytes"] = path.stat().st_size
            row[kind]["retention"] = score(draw(pipe, fixed, tag), fixed)
        results["concepts"][concept] = row
        print(concept, json.dumps(row))
    if len(args.concepts) >= 2:
        results["pair"] = pair(args.concepts[:2], files, args.n, rows)
        print("pair", json.dumps(results["pair"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    image_grid(torch.stack([x for row in rows for x in row]), cols=8).save(out / "grid.png")
    print(f"wrote {out / 'results.json'} and {out / 'grid.png'}")


def pair(concepts: list[str], files: dict, n: int, rows: list) -> dict:
    """Two concepts in one image: LoRAs together, merged two ways, and both inversion words."""
    a, b = concepts
    prompts = concept_prompts((a, b), n)
    out = {}
    pipe = t2i.load("shapes")
    for c in concepts:
        pipe.load_lora(files[("lora", c)])
    images = draw(pipe, prompts, f"<lora:{a}:1> <lora:{b}:1>")
    out["loras_together"] = score(images, prompts, (a, b))
    rows.append(images[:8])
    images = draw(pipe, prompts, f"<lora:{a}:0.5> <lora:{b}:0.5>")
    out["weighted_sum_half"] = score(images, prompts, (a, b))
    own = {c: concept_prompts(c, 16, seed=2) for c in concepts}  # each concept's own inputs
    fused = merge.gradient_fusion(
        pipe.unet,
        {a: 1.0, b: 1.0},
        {c: (lambda c=c: draw(pipe, own[c], f"<lora:{c}:1>")) for c in concepts},
    )
    merge.apply_merged(pipe.unet, fused)
    images = draw(pipe, prompts)
    out["gradient_fusion"] = score(images, prompts, (a, b))
    rows.append(images[:8])
    ti = t2i.load("shapes")
    for c in concepts:
        ti.load_embedding(files[("ti", c)])
    images = draw(ti, prompts)
    out["inversion_words_together"] = score(images, prompts, (a, b))
    rows.append(images[:8])
    return out


if __name__ == "__main__":
    main()
