"""`shapes` models on prompts in and out of the caption grammar, judged exactly (issue 36).

For each model: the fixed prompts of `t2i eval` (in the grammar), the held-out colour-shape pairs,
and paraphrases in phrasings held out of training (t2i/data/shapes_phrasing.py: synonyms, plurals
and counts, sentence frames, word orders, case), on training pairs and on the held-out pairs.
Each set: the share of images entirely right, per category, by object count; paraphrases also by
kind (a relation, a repeated object "two red circles", plain lists and places) and the share of
prompts with words the model cannot read. One image per prompt, image i from seed i, the model's
default sampler, steps and guidance.

    python3 benchmarks/bench_shapes_prompts.py shapes runs/shapes36/model --n 300 \\
        --out docs/training/shapes_prompts
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

import t2i
from t2i.data.judge import judge
from t2i.data.shapes import heldout_prompts, parse_caption, shapes_eval_prompts
from t2i.data.shapes_phrasing import kind_of, paraphrase_prompts
from t2i.evaluation.evaluate import generate_batched
from t2i.evaluation.metrics import compositional_accuracy
from t2i.images import image_grid


def prompt_sets(n: int) -> dict[str, list[tuple[str, object]]]:
    """name -> [(prompt, what the judge checks)]."""
    fixed = shapes_eval_prompts(n)
    held = heldout_prompts(n)
    return {
        "fixed": [(p, parse_caption(p)) for p in fixed],
        "heldout_pairs": [(p, parse_caption(p)) for p in held],
        "paraphrase": [(p.text, p.spec) for p in paraphrase_prompts(n)],
        "paraphrase_heldout_pairs": [
            (p.text, p.spec) for p in paraphrase_prompts(n, split="holdout")
        ],
        "paraphrase_every_level": [
            (p.text, p.spec) for p in paraphrase_prompts(n, phrasing="heldout")
        ],
    }


def score(verdicts, specs) -> dict:
    acc = compositional_accuracy(verdicts)
    out = {"entirely_right": round(acc["overall"], 4), "n": acc["n"]}
    out["per_category"] = {k: round(v, 4) for k, v in acc.items() if f"n_{k}" in acc}
    groups = defaultdict(list)
    for v, s in zip(verdicts, specs):
        groups[f"{len(s.objects)} object(s)"].append(v.ok)
        groups[kind_of(s)].append(v.ok)
    out["by_group"] = {k: [round(float(np.mean(x)), 4), len(x)] for k, x in sorted(groups.items())}
    return out


def measure(model: str, sets: dict, batch: int, out: Path) -> dict:
    pipe = t2i.load(model)
    params = pipe.params("", seed=0)
    result = {"sampler": params.sampler, "steps": params.steps, "guidance": params.guidance}
    for name, items in sets.items():
        prompts = [p for p, _ in items]
        images, _ = generate_batched(pipe, prompts, params, batch)
        verdicts = [judge(img, spec) for img, (_, spec) in zip(images, items)]
        result[name] = score(verdicts, [s for _, s in items])
        unreadable = [p for p in prompts if pipe.unknown_words(pipe.params(p))]
        result[name]["prompts_with_unknown_words"] = round(len(unreadable) / len(prompts), 4)
        if name.startswith("paraphrase"):
            tag = Path(model).name if Path(model).exists() else model
            image_grid(images[:32], cols=8).save(out / f"{tag}_{name}_grid.png")
        print(model, name, result[name]["entirely_right"], flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="bundled names or model folders")
    ap.add_argument("--n", type=int, default=300, help="prompts per set")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("docs/training/shapes_prompts"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sets = prompt_sets(args.n)
    results = {m: measure(m, sets, args.batch, args.out) for m in args.models}
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    for m, r in results.items():
        print(f"\n{m}")
        for name in sets:
            groups = ", ".join(f"{k} {v[0]:.3f} ({v[1]})" for k, v in r[name]["by_group"].items())
            print(f"  {name:26s} {r[name]['entirely_right']:.3f}  {groups}")


if __name__ == "__main__":
    main()
