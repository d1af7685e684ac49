"""`t2i restyle IMAGE PROMPT...`: a GAN's style transfer (Reed et al. 2016).

The style encoder reads which noise z would draw the image; the generator then draws that z under
each prompt. What the caption does not say (shade, pose, thickness, background) is what carries
over. Only a GAN folder has a style encoder; any other model is refused with that reason.

    t2i restyle shirt.png "a pullover" "a dress" --model runs/gan_fashion/model --out restyled.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from t2i.families import load
from t2i.gan_pipeline import GanPipeline
from t2i.generate import output_paths
from t2i.images import load_image, to_pil
from t2i.interpolate import strip
from t2i.params import MAX_IMAGES, save_png


def restyle_to_file(args: argparse.Namespace) -> Path:
    """Check, load, redraw, write one strip PNG: the style image, then one image per prompt."""
    (out,) = output_paths(args.out, [0])
    if not 1 <= len(args.prompts) <= MAX_IMAGES:
        raise ValueError(f"give 1 to {MAX_IMAGES} prompts, got {len(args.prompts)}")
    pipe = load(args.model)
    if not isinstance(pipe, GanPipeline):
        raise ValueError(
            f"--model {args.model}: a {pipe.family} model has no style encoder; restyle needs "
            "a GAN folder (t2i train gan)"
        )
    for prompt in args.prompts:  # the checks every request gets (length, weights, words)
        pipe.params(prompt)
    size = pipe.image_size
    image = load_image(args.image, (size, size), pipe.image_channels, what="style image")
    redrawn = pipe.restyle(image.expand(len(args.prompts), -1, -1, -1), list(args.prompts))
    images = torch.cat([image, redrawn])
    return save_png(strip(to_pil(images)), out, pipe.params(args.prompts[0]))
