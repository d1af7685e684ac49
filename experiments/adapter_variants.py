"""Can a bigger adapter learn the new `diamond` shape? Two variants beyond the defaults of
benchmarks/bench_adapters.py, on the diamond folder it wrote: a LoRA of rank 8 on the attention
and the ResBlocks' convolutions, and four textual-inversion vectors, 2,000 steps each.

    python3 benchmarks/bench_adapters.py --out runs/adapters     # writes the folder first
    python3 experiments/adapter_variants.py runs/variants runs/adapters/data/diamond
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_adapters import draw, score  # noqa: E402

import t2i  # noqa: E402
from t2i.cli import main  # noqa: E402
from t2i.data.shapes_concepts import concept_prompts  # noqa: E402

VARIANTS = {
    "lora_r8_convs_2000": ["lora", "--name", "diamond", "--lora.rank", "8", "--lora.alpha", "8"]
    + ["--lora.convs", "true", "--loop.steps", "2000"],
    "ti_4vec_2000": ["textual_inversion", "--token", "diamond", "--init_word", "square"]
    + ["--vectors", "4", "--loop.steps", "2000"],
}


def run(out: Path, data: Path) -> None:
    prompts = concept_prompts("diamond", 100)
    for name, argv in VARIANTS.items():
        folder = out / name
        flags = ["--init", "shapes", "--data", str(data), "--out", str(folder), "--no-progress"]
        flags += ["--loop.sample_every", "0", "--cache_dir", str(out / "cache"), *argv[1:]]
        start = time.perf_counter()
        if main(["train", argv[0], *flags]) != 0:
            raise RuntimeError(f"{name}: training failed")
        seconds = time.perf_counter() - start
        pipe, path = t2i.load("shapes"), folder / "model" / "diamond.safetensors"
        if argv[0] == "lora":
            pipe.load_lora(path)
            tag = "<lora:diamond:1>"
        else:
            pipe.load_embedding(path)
            tag = ""
        result = score(draw(pipe, prompts, tag), prompts, ("diamond",))
        result |= {"train_seconds": round(seconds, 1), "file_bytes": path.stat().st_size}
        print(name, json.dumps(result), flush=True)


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
