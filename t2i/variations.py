"""`t2i variations IMAGE`: images drawn from another image's CLIP embedding (DALL-E 2's
variations), and with `--towards` a walk between two images' embeddings.

Only an unCLIP folder reads an image embedding; any other model is refused with that reason.

    t2i variations cat.png --model runs/unclip/model --n 4 --out cat-var.png   # cat-var-<seed>.png
    t2i variations cat.png --towards dog.png --frames 6 --model runs/unclip/model --out walk.png
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from t2i.families import load
from t2i.generate import output_paths
from t2i.images import to_pil
from t2i.interpolate import strip
from t2i.params import MAX_IMAGES, check_int, save_png
from t2i.unclip_pipeline import UnclipPipeline


def request(args: argparse.Namespace) -> dict:
    keys = ("seed", "steps", "guidance", "sampler")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def variations_to_file(args: argparse.Namespace) -> list[Path]:
    """Check, load, draw, write: one PNG per variation, or one strip for a walk."""
    pipe = load(args.model)
    if not isinstance(pipe, UnclipPipeline):
        raise ValueError(
            f"--model {args.model}: a {pipe.family} model draws no variations; they need an "
            "unCLIP folder (t2i train unclip), whose decoder reads an image embedding"
        )
    if args.towards:
        p = pipe.params("", **request(args))
        frames = check_int("--frames", args.frames, 2, MAX_IMAGES)
        (out,) = output_paths(args.out, [p.seed])
        images = pipe.interpolate_images(args.image, args.towards, frames, **request(args))
        return [save_png(strip(to_pil(images)), out, p, pipe.model_hash)]
    p = pipe.params("", image_prompt=args.image, **request(args))  # recorded in each PNG
    n = check_int("--n", args.n, 1, MAX_IMAGES)
    seeds = [p.seed + i for i in range(n)]
    paths = output_paths(args.out, seeds)
    images = to_pil(pipe.generate(p, n))
    return [
        save_png(image, path, replace(p, seed=seed), pipe.model_hash)
        for image, path, seed in zip(images, paths, seeds)
    ]
