"""A LoRA's concept accuracy and the base's retention with it applied: the figures of
BENCHMARKS.md, "Personalisation", prior preservation.

    python3 experiments/lora_prior.py runs/teal-prior/model/teal.safetensors teal
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_adapters import draw, score  # noqa: E402

import t2i  # noqa: E402
from t2i.data.shapes import shapes_eval_prompts  # noqa: E402
from t2i.data.shapes_concepts import concept_prompts  # noqa: E402


def main(path: str, concept: str) -> None:
    pipe = t2i.load("shapes")
    tag = f"<lora:{pipe.load_lora(path)}:1>"
    prompts, fixed = concept_prompts(concept, 100), shapes_eval_prompts(200)
    own = score(draw(pipe, prompts, tag), prompts, (concept,))
    kept = score(draw(pipe, fixed, tag), fixed)
    print(json.dumps({"concept": own["all"], concept: own[concept], "retention": kept["all"]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
