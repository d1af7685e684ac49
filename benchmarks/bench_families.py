"""Time per image of models of any family at their own defaults, side by side in one run.

Each model is loaded through the protocol (`t2i.load`) and asked for one image (batch 1) and for
a batch; the whole `generate` call is timed (text states cached after the first call, as a
server runs). Models are interleaved over the repeats and medians reported, so the ratios hold
on a shared machine. Parameters: every network the family counts (`pipe.networks()`) plus the
text encoder.

    python3 benchmarks/bench_families.py fashion runs/draw_fashion/model --batch 50
    python3 benchmarks/bench_families.py shapes runs/draw_shapes/model --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import t2i


def parameters(pipe) -> int:
    nets = [*pipe.networks(), pipe.text_encoder]
    return sum(p.numel() for net in nets for p in net.parameters())


@torch.no_grad()
def seconds(pipe, prompt: str, n: int) -> float:
    p = pipe.params(prompt)
    start = time.perf_counter()
    pipe.generate(p, n)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="bundled model names or model folders")
    ap.add_argument("--prompt", default=None, help="default: the model's data's first caption")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipes = {m: t2i.load(m) for m in args.models}
    prompts = {m: args.prompt or default_prompt(pipe) for m, pipe in pipes.items()}
    times: dict[tuple[str, int], list[float]] = {}
    for m, pipe in pipes.items():  # warm-up: text states, allocator, first-call costs
        seconds(pipe, prompts[m], 1)
    for _ in range(args.repeats):
        for m, pipe in pipes.items():
            for n in (1, args.batch):
                times.setdefault((m, n), []).append(seconds(pipe, prompts[m], n) / n)
    print(f"threads {torch.get_num_threads()}, median of {args.repeats}, seconds per image")
    print(f"| model | family | parameters | steps | batch 1 | batch {args.batch} |")
    print("|---|---|---|---|---|---|")
    for m, pipe in pipes.items():
        one, many = (statistics.median(times[m, n]) for n in (1, args.batch))
        steps = pipe.defaults["steps"]
        print(
            f"| {m} | {pipe.family} | {parameters(pipe) / 1e6:.2f} M | {steps} | {one:.4f} | "
            f"{many:.4f} |"
        )


def default_prompt(pipe) -> str:
    source = str(pipe.index.get("data", {}).get("source", ""))
    return "an ankle boot" if "fashion" in source else "a red circle above a blue square"


if __name__ == "__main__":
    main()
