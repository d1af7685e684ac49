"""Inpainting on `shapes`: remove or replace one object of a scene, checked by the exact judge.

For each of --n test scenes with 2-3 objects, one object is picked; its grid cell is the mask
(white = repaint) and the prompt is the caption of the scene as it should become ("absolute"
phrasing: every object with its cell; --prompt object: for a replacement only the new object).
Success = the edit happened (removed: no object of that colour and shape in that cell; replaced:
the new object in that cell, the old one gone) and the other objects are intact (same colour,
shape and cell). Rows, all in one run on the same scenes:
  oracle      the target scene rendered: the judge's ceiling (should be 100%)
  unedited    the input image itself: what "doing nothing" scores
  txt2img     plain generation from the target caption, same seed: the model's own quality
  inpaint     RePaint-style replacement (t2i/editing.py), --resample r passes

    python benchmarks/bench_inpainting.py --model /work/runs/shapes_txt/model --n 200 --bf16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from t2i.data.judge import detect
from t2i.data.shapes import (
    BACKGROUNDS,
    CELL_PHRASES,
    COLOURS,
    GRID,
    SHAPES,
    Obj,
    Scene,
    ShapesConfig,
    make_caption,
    pil_to_tensor,
    render_scene,
    sample_scene,
    scene_rng,
)
from t2i.editing import InpaintDenoiser, sample_with_jumps
from t2i.families import load
from t2i.images import psnr
from t2i.samplers import get_sampler


def edit_case(i: int, task: str, config: ShapesConfig):
    """(scene, target scene, picked object index, new object or None) of test scene i."""
    rng = scene_rng(config.seed, "test", i)
    scene = sample_scene(rng, config, "test")
    while len(scene.objects) < 2:
        scene = sample_scene(rng, config, "test")
    k = int(rng.integers(len(scene.objects)))
    old = scene.objects[k]
    others = [o for j, o in enumerate(scene.objects) if j != k]
    if task == "remove":
        return scene, Scene(scene.background, tuple(others)), k, None
    used = {(o.colour, o.shape) for o in scene.objects} | set(config.holdout)
    pairs = [
        (c, s)
        for c in COLOURS
        for s in SHAPES
        if c != old.colour and s != old.shape and (c, s) not in used
    ]
    colour, shape = pairs[int(rng.integers(len(pairs)))]
    new = Obj(shape, colour, old.size, old.cell)
    objs = tuple(new if j == k else o for j, o in enumerate(scene.objects))
    return scene, Scene(scene.background, objs), k, new


def edit_prompt(case, i: int, kind: str) -> str:
    """'scene': the caption of the whole target scene ("absolute" phrasing); 'object': for a
    replacement only the new object in its cell, as one would prompt for the masked region."""
    target, new = case[1], case[3]
    if kind == "object" and new is not None:
        return f"a {new.size} {new.colour} {new.shape} {CELL_PHRASES[new.cell]}"
    return make_caption(target, np.random.default_rng(i), "absolute")


def cell_mask(cell: tuple[int, int], size: int) -> torch.Tensor:
    """(1, H, W) 1 inside the grid cell (+1 px margin), 0 elsewhere."""
    m = torch.zeros(1, size, size)
    step = size / GRID
    r0, c0 = int(cell[0] * step) - 1, int(cell[1] * step) - 1
    r1, c1 = int(np.ceil((cell[0] + 1) * step)) + 1, int(np.ceil((cell[1] + 1) * step)) + 1
    m[:, max(r0, 0) : r1, max(c0, 0) : c1] = 1
    return m


def cell_is_background(image: torch.Tensor, scene: Scene, cell: tuple[int, int]) -> bool:
    """At least 90% of the cell's pixels within 60 RGB of the scene's background colour."""
    rgb = (image.clamp(-1, 1) + 1) * 127.5  # (3, H, W)
    box = cell_mask(cell, image.shape[-1])[0].bool()
    bg = torch.tensor(BACKGROUNDS[scene.background], dtype=rgb.dtype)[:, None]
    dist = (rgb[:, box] - bg).norm(dim=0)
    return (dist < 60).float().mean().item() >= 0.9


def verdict(image: torch.Tensor, scene: Scene, k: int, new: Obj | None) -> tuple[bool, bool]:
    """(edit done, others intact) of one image against the edit.

    Removed: nothing detected in the cell and the cell is background (a smudge is no removal).
    Replaced: the new object detected in the cell, the old one not.
    """
    dets, _ = detect(image)
    found = {(d.colour, d.shape, d.cell) for d in dets}
    old = scene.objects[k]
    if new is None:
        empty = all(d.cell != old.cell for d in dets)
        edit = empty and cell_is_background(image, scene, old.cell)
    else:
        edit = (old.colour, old.shape, old.cell) not in found
        edit = edit and (new.colour, new.shape, new.cell) in found
    others = all(
        (o.colour, o.shape, o.cell) in found for j, o in enumerate(scene.objects) if j != k
    )
    return edit, others


@torch.no_grad()
def run_batch(pipe, args, prompts, x_init, mask, seeds, resample: int | None) -> torch.Tensor:
    """Inpaint (resample given) or plain txt2img (resample None) a batch, one seed per image."""
    p = pipe.params("", steps=args.steps, sampler=args.sampler, guidance=args.guidance)
    cond = pipe.encode_text(prompts)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    noise = torch.stack([torch.randn(x_init.shape[1:], generator=g) for g in gens])
    sigmas = pipe.sigmas(p.steps)
    model = pipe.guided(p, sigmas)
    if resample is not None:
        model = InpaintDenoiser(model, pipe.encode_image(x_init), mask, noise)
    sampler = get_sampler(p.sampler)
    x = noise * sigmas[0]
    with torch.autocast("cpu", torch.bfloat16, enabled=pipe.bf16):
        x0 = sample_with_jumps(sampler, model, x, sigmas, cond, None, gens, resample or 1)
    return pipe.decode(x0.float())


@torch.no_grad()
def inversion_psnr(pipe, n: int, steps: int, config: ShapesConfig) -> list[float]:
    """DDIM-invert n test scenes with their captions, sample back (ddim, guidance 1): PSNR each."""
    scenes = [sample_scene(scene_rng(config.seed, "test", i), config, "test") for i in range(n)]
    x = torch.stack([pil_to_tensor(render_scene(s, config.image_size)) for s in scenes])
    prompts = [make_caption(s, np.random.default_rng(i), "absolute") for i, s in enumerate(scenes)]
    p = pipe.params("", steps=steps, sampler="ddim", guidance=1.0)
    out = []
    for i in range(n):
        noise = pipe.invert(x[i : i + 1], prompts[i], steps)
        back = pipe.generate(p, noise=noise, cond=pipe.encode_text([prompts[i]]))
        out.append(psnr(back, x[i : i + 1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a shapes model folder")
    ap.add_argument("--n", type=int, default=200, help="scenes per task")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--resample", type=int, default=1, help="RePaint passes per 5 steps")
    ap.add_argument("--methods", default="txt2img,inpaint", help="sampled rows to run")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--tasks", default="remove,replace")
    ap.add_argument("--invert", type=int, default=0, help="also: inversion PSNR on N scenes")
    ap.add_argument("--bf16", action="store_true", help="sample under bf16 autocast")
    ap.add_argument("--prompt", choices=["scene", "object"], default="scene", help="edit_prompt")
    args = ap.parse_args()
    torch.set_num_threads(2)
    pipe = load(args.model, bf16=args.bf16)
    size = pipe.image_size
    config = ShapesConfig(image_size=size)
    print(
        f"model {args.model}, {args.n} scenes/task, {args.sampler} {args.steps} steps, "
        f"guidance {args.guidance}, image {size}px, {'bf16' if args.bf16 else 'fp32'}, "
        f"prompt: {args.prompt}"
    )
    if args.invert:
        t0, values = time.perf_counter(), inversion_psnr(pipe, args.invert, args.steps, config)
        print(
            f"DDIM inversion -> ddim sampling, {args.invert} scenes, {args.steps} steps: PSNR "
            f"median {np.median(values):.1f} dB (min {min(values):.1f}, max {max(values):.1f}), "
            f"{time.perf_counter() - t0:.0f} s"
        )
    print("| task | method | edit done | others intact | both | max change outside mask | s |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        cases = [edit_case(i, task, config) for i in range(args.n)]
        images = torch.stack([pil_to_tensor(render_scene(c[0], size)) for c in cases])
        targets = torch.stack([pil_to_tensor(render_scene(c[1], size)) for c in cases])
        masks = torch.stack([cell_mask(c[0].objects[c[2]].cell, size) for c in cases])
        prompts = [edit_prompt(c, i, args.prompt) for i, c in enumerate(cases)]
        rows = {"oracle": (targets, 0.0), "unedited": (images, 0.0)}
        methods = [("txt2img", None)] if "txt2img" in args.methods else []
        if "inpaint" in args.methods:
            methods.append((f"inpaint r={args.resample}", args.resample))
        for name, resample in methods:
            t0, outs = time.perf_counter(), []
            for b in range(0, args.n, args.batch):
                sl = slice(b, b + args.batch)
                seeds = list(range(b, min(b + args.batch, args.n)))
                outs.append(
                    run_batch(pipe, args, prompts[sl], images[sl], masks[sl], seeds, resample)
                )
            rows[name] = (torch.cat(outs), time.perf_counter() - t0)
        for name, (out, secs) in rows.items():
            scores = [verdict(out[i], c[0], c[2], c[3]) for i, c in enumerate(cases)]
            edit = np.mean([s[0] for s in scores])
            intact = np.mean([s[1] for s in scores])
            both = np.mean([s[0] and s[1] for s in scores])
            outside = ((out - images).abs() * (1 - masks)).amax().item()
            print(
                f"| {task} | {name} | {edit:.1%} | {intact:.1%} | {both:.1%} | "
                f"{outside * 127.5:.2f}/255 | {secs:.0f} |"
            )


if __name__ == "__main__":
    main()
