"""A one-stage shapes model judged on the fixed prompts of `t2i eval`, by objects and by fact.

Rows: the model at each guidance asked for (seed i for prompt i, the model's own sampler and
steps), and, for a latent model, its autoencoder's reconstructions of the real scenes behind the
same prompts (the ceiling of anything drawn through it). Under each generated row, the same
images split by whether their prompt states a position (a cell or a relation): entirely right,
and right in every fact but position.

    python3 benchmarks/shapes_judge.py MODEL --n 100 --guidance 1.5,3,5 --bf16
    python3 benchmarks/shapes_judge.py MODEL --guidance 3 --sampler dpmpp_2m --steps 30 \
        --guidance-interval 0.3,20
"""

from __future__ import annotations

import argparse

import torch
from cascade_stages import eval_scenes, floats, table_row

from t2i.data.judge import judge
from t2i.families import load
from t2i.pipeline import Pipeline

CATEGORIES = ("count", "colour", "shape", "binding", "size", "position", "background")


def generated(
    pipe: Pipeline, prompts: list[str], guidance: float, batch: int, **sampling
) -> torch.Tensor:
    """sampling: sampler, steps, guidance_interval (None: the model's own)."""
    images = []
    for k in range(0, len(prompts), batch):
        part = prompts[k : k + batch]
        items = [
            pipe.params(p, seed=k + i, guidance=guidance, **sampling) for i, p in enumerate(part)
        ]
        images.append(pipe.generate_items(items))
    return torch.cat(images)


def reconstructed(pipe: Pipeline, reals: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return pipe.decode(pipe.encode_image(reals))


def row(label: str, verdicts: list, counts: list[int]) -> str:
    return table_row(label, verdicts, counts, CATEGORIES)


def judged(images: torch.Tensor, prompts: list[str]) -> list:
    return [judge(im, p) for im, p in zip(images, prompts)]


def position_split(verdicts: list) -> str:
    """All facts right, for prompts stating no position and for those stating one; and for the
    latter, every fact right but the position ones (what placement alone costs)."""
    with_pos = [v for v in verdicts if "position" in v.by_category()]
    without = [v for v in verdicts if "position" not in v.by_category()]
    rest = [all(ok for c, ok in v.by_category().items() if c != "position") for v in with_pos]

    def share(xs) -> str:
        return f"{sum(xs) / len(xs):.2f}" if xs else "-"

    return (
        f"  no position stated ({len(without)}): {share([v.ok for v in without])}; "
        f"a position stated ({len(with_pos)}): {share([v.ok for v in with_pos])}, "
        f"all but position {share(rest)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a shapes model folder (not a cascade)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--guidance", type=floats, default=[None], help="e.g. 1.5,3,5")
    ap.add_argument("--sampler", default=None, help="default: the model's own")
    ap.add_argument("--steps", type=int, default=None, help="default: the model's own")
    ap.add_argument("--guidance-interval", default=None, help="LO,HI or all (default: the model's)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (t2i eval runs fp32)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load(args.model, bf16=args.bf16)
    if pipe.base is not None:
        raise SystemExit(f"{args.model} is a cascade: use benchmarks/cascade_stages.py")
    interval = args.guidance_interval
    sampling = dict(
        sampler=args.sampler,
        steps=args.steps,
        guidance_interval=interval if interval in (None, "all") else floats(interval),
    )
    prompts, reals, counts = eval_scenes(args.n)
    sizes = " / ".join(str(counts.count(k)) for k in sorted(set(counts)))
    print(
        f"{args.model}: n = {args.n} fixed prompts (scenes of 1 / 2 / 3 objects: {sizes}), "
        f"seed i for prompt i, {'bf16' if args.bf16 else 'fp32'}, "
        f"{pipe.params(prompts[0], **sampling)}"
    )
    print("| images | all facts | by objects | " + " | ".join(CATEGORIES) + " |")
    print("|---" * (len(CATEGORIES) + 3) + "|")
    if pipe.autoencoder is not None:
        recon = judged(reconstructed(pipe, reals), prompts)
        print(row("autoencoder reconstructions", recon, counts))
    for g in args.guidance:
        g = pipe.defaults["guidance_scale"] if g is None else g
        images = generated(pipe, prompts, g, args.batch_size, **sampling)
        verdicts = judged(images, prompts)
        print(row(f"generated, guidance {g}", verdicts, counts))
        print(position_split(verdicts), flush=True)


if __name__ == "__main__":
    main()
