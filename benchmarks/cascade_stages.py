"""Which stage of a shapes cascade fails? Each stage given the true image of the stage before.

On the prompts of `t2i eval --data shapes` (the fixed set, the same seeds), the shapes judge's
compositional accuracy of the cascade's 64x64 images when the last stage draws from
- "true N px": the real scene shrunk to the last stage's input (N: 8 or 16; the base stages
  replaced by truth: the last stage's ceiling),
- "true 1 px": a three-stage cascade's middle stage given the real scene's mean colour,
- "cascade": every stage generated, as `t2i generate` runs it; with `--base-guidance` and
  `--last-guidance` lists, once per pair (a base stage samples with its own default guidance, the
  last with the one asked for: this measures the defaults a cascade's cards should carry).

    python3 benchmarks/cascade_stages.py CASCADE --n 50
    python3 benchmarks/cascade_stages.py CASCADE --n 50 --no-truth --base-guidance 1.5,5,8
    python3 benchmarks/cascade_stages.py CASCADE --n 0 --grid small.png  # what the base draws

`--grid` writes the first 24 prompts' small images, enlarged: odd rows the real scene shrunk to
the last stage's input, even rows the base's drawing of it (from the true mean colour in a
three-stage cascade); the prompts are printed.
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

from t2i.cascade import CascadePipeline
from t2i.data.judge import judge
from t2i.data.shapes import (
    ShapesConfig,
    make_caption,
    pil_to_tensor,
    render_scene,
    sample_scene,
    scene_rng,
)
from t2i.evaluation.metrics import compositional_accuracy
from t2i.families import load
from t2i.images import shrink, to_pil

SEED, SPLIT = 1234, "test"  # shapes_eval_prompts: the fixed prompt set of `t2i eval`


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def eval_scenes(n: int) -> tuple[list[str], torch.Tensor, list[int]]:
    """The fixed prompts, their real scenes (N, 3, 64, 64) in [-1, 1] and their object counts."""
    config, prompts, images, counts = ShapesConfig(seed=SEED), [], [], []
    for i in range(n):
        rng = scene_rng(SEED, SPLIT, i)
        scene = sample_scene(rng, config, SPLIT)
        prompts.append(make_caption(scene, rng))
        images.append(pil_to_tensor(render_scene(scene, 64)))
        counts.append(len(scene.objects))
    return prompts, torch.stack(images), counts


def small_images(pipe: CascadePipeline, prompts: list[str], seeds: list[int], mean=None):
    """The last stage's input drawn by its base; `mean` (B, 3, 1, 1) replaces the base's base."""
    base = pipe.base
    guidance = base.defaults["guidance_scale"]
    items = [base.params(p, seed=s, guidance=guidance) for p, s in zip(prompts, seeds)]
    if mean is None:
        return base.generate_items(items)
    cond = base.encode_text(prompts)
    return base.draw_from(items[0], seeds, cond, mean)


def accuracy(pipe: CascadePipeline, prompts, reals, source: str, batch: int, guidance=None) -> list:
    """The judge's verdicts on the cascade's images of the prompts, the last stage drawing from
    `source` (module docstring)."""
    images = []
    for k in range(0, len(prompts), batch):
        part, seeds = prompts[k : k + batch], list(range(k, k + len(prompts[k : k + batch])))
        if source == "true small":
            low = shrink(reals[k : k + batch], (pipe.index["low_res"],) * 2)
        elif source == "true 1 px":
            low = small_images(pipe, part, seeds, shrink(reals[k : k + batch], (1, 1)))
        else:
            low = small_images(pipe, part, seeds)
        p = pipe.params(part[0], guidance=guidance)
        cond = pipe.encode_text(part)
        images.append(pipe.draw_from(p, seeds, cond, low))
    return [judge(im, p) for im, p in zip(torch.cat(images), prompts)]


def by_objects(verdicts: list, counts: list[int]) -> str:
    """Share of the scenes of 1, 2, 3 ... objects with every fact right ("1.00 / 0.22 / 0.00")."""
    groups: dict[int, list[bool]] = {}
    for verdict, count in zip(verdicts, counts):
        groups.setdefault(count, []).append(verdict.ok)
    return " / ".join(f"{sum(g) / len(g):.2f}" for _, g in sorted(groups.items()))


def table_row(label: str, verdicts: list, counts: list[int], categories) -> str:
    """One markdown row: all facts, by objects, then each category (– where none is stated)."""
    acc = compositional_accuracy(verdicts)
    cats = " | ".join(f"{acc[c]:.2f}" if c in acc else "–" for c in categories)
    return f"| {label} | {acc['overall']:.2f} | {by_objects(verdicts, counts)} | {cats} |"


def write_grid(pipe: CascadePipeline, path: str, n: int = 24, cols: int = 8) -> None:
    """Real small scenes above the base's drawings of them (module docstring)."""
    prompts, reals, _ = eval_scenes(n)
    side = pipe.index["low_res"]
    truth = shrink(reals, (side, side))
    mean = shrink(reals, (1, 1)) if isinstance(pipe.base, CascadePipeline) else None
    drawn = small_images(pipe, prompts, list(range(n)), mean)
    cell = 66  # 64 px and a 2 px gap
    grid = Image.new("RGB", (cols * cell, 2 * (-(-n // cols)) * cell), "white")
    for i, (t, d) in enumerate(zip(to_pil(truth), to_pil(drawn))):
        row, col = divmod(i, cols)
        for k, im in enumerate((t, d)):
            grid.paste(im.resize((64, 64), Image.NEAREST), (col * cell, (2 * row + k) * cell))
    grid.save(path)
    for i, p in enumerate(prompts):
        print(f"{i}: {p}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cascade", help="a cascade model folder")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (t2i eval runs fp32)")
    ap.add_argument("--no-truth", action="store_true", help="only the generated cascade's rows")
    ap.add_argument("--base-guidance", type=floats, default=[None], help="e.g. 1.5,3,5")
    ap.add_argument("--last-guidance", type=floats, default=[None], help="e.g. 2,3")
    ap.add_argument("--grid", help="write the base's small images of 24 prompts to this PNG")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load(args.cascade, bf16=args.bf16)
    if pipe.base is None:
        raise SystemExit(f"{args.cascade} is not a cascade")
    if args.grid:
        write_grid(pipe, args.grid)
    if args.n == 0:
        return
    prompts, reals, counts = eval_scenes(args.n)
    sizes = " / ".join(f"{counts.count(k)}" for k in sorted(set(counts)))
    truths = (
        []
        if args.no_truth
        else ["true small"] + (["true 1 px"] if isinstance(pipe.base, CascadePipeline) else [])
    )
    rows = [(source, None, None) for source in truths]
    rows += [("cascade", b, g) for b in args.base_guidance for g in args.last_guidance]
    cats = ("count", "colour", "shape", "binding", "size", "position", "background")
    dtype = "bf16" if args.bf16 else "fp32"
    print(f"{args.cascade}: n = {args.n} fixed prompts, seed i for prompt i, {dtype}")
    print(f"scenes of {' / '.join(map(str, sorted(set(counts))))} objects: {sizes}")
    head = ["last stage draws from", "guidance (base / last)", "all facts", "by objects", *cats]
    print("| " + " | ".join(head) + " |")
    print("|---" * (len(cats) + 4) + "|")
    default = pipe.base.defaults["guidance_scale"]
    for source, base_guidance, guidance in rows:
        pipe.base.defaults["guidance_scale"] = default if base_guidance is None else base_guidance
        verdicts = accuracy(pipe, prompts, reals, source, args.batch_size, guidance)
        acc = compositional_accuracy(verdicts)
        last = guidance or pipe.defaults["guidance_scale"]
        used = f"{pipe.base.defaults['guidance_scale']} / {last}"
        row = " | ".join(f"{acc[c]:.2f}" if c in acc else "–" for c in cats)
        label = f"true {pipe.index['low_res']} px" if source == "true small" else source
        objects = by_objects(verdicts, counts)
        print(f"| {label} | {used} | {acc['overall']:.2f} | {objects} | {row} |", flush=True)


if __name__ == "__main__":
    main()
