"""`t2i interpolate`: a strip of images between two seeds, two prompts, or two real images.

Noise is interpolated by slerp (Gaussian noise lives near a sphere: a straight line between two
samples passes through low-norm, unlikely noise; White 2016, "Sampling generative networks");
text states by a straight line. Real images are first turned into noise by DDIM inversion
(t2i/editing.py), then sampled back with the deterministic "ddim" sampler and guidance 1, the
setting under which inversion reconstructs them.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from t2i.families import load
from t2i.generate import output_paths
from t2i.guidance import pad_context
from t2i.images import load_image, read_image_size, to_pil
from t2i.params import MAX_IMAGES, GenerationParams, save_png
from t2i.protocol import Generator


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between tensors of the same shape (a at t=0, b at t=1)."""
    if t in (0, 1):  # exactly the ends: sin(omega) / sin(omega) rounds off 1
        return a if t == 0 else b
    fa, fb = a.flatten().double(), b.flatten().double()
    cos = (fa @ fb / (fa.norm() * fb.norm())).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-6:  # (anti)parallel: the straight line is the arc
        return (1 - t) * a + t * b
    wa, wb = torch.sin((1 - t) * omega) / torch.sin(omega), torch.sin(t * omega) / torch.sin(omega)
    return (wa * fa + wb * fb).reshape(a.shape).to(a.dtype)


def lerp_cond(cond_a: dict, cond_b: dict, ts: list[float]) -> dict:
    """Text states of batch len(ts): (1 - t) * a + t * b, padded to one length.

    The mask is a's at t = 0, b's at t = 1 (so the ends are exactly the two prompts) and
    a or b between.
    """
    cond_a, cond_b = pad_context(cond_a, cond_b)
    ctx = torch.cat([(1 - t) * cond_a["context"] + t * cond_b["context"] for t in ts])
    ma, mb = cond_a["context_mask"], cond_b["context_mask"]
    mask = torch.cat([ma if t == 0 else mb if t == 1 else ma | mb for t in ts])
    return {"context": ctx, "context_mask": mask}


def frame_times(frames: int) -> list[float]:
    if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= MAX_IMAGES:
        raise ValueError(f"frames must be an integer in [2, {MAX_IMAGES}], got {frames!r}")
    return [i / (frames - 1) for i in range(frames)]


@torch.no_grad()
def interpolate(
    pipe: Generator,
    p: GenerationParams,
    frames: int = 5,
    prompt_b: str | None = None,
    seed_b: int | None = None,
    images: tuple[str, str] | None = None,
) -> torch.Tensor:
    """(frames, C, H, W) images in [-1, 1] from (p.prompt, p.seed) to (prompt_b, seed_b).

    images: two image files to invert and use as the end points' noise instead of the seeds.
    """
    if not pipe.supports.interpolation:
        raise ValueError(
            f"model {pipe.name!r} ({pipe.family}): interpolation walks a diffusion model's "
            "noise and text states, which it does not have"
        )
    ts = frame_times(frames)
    prompt_b = p.prompt if prompt_b is None else prompt_b
    if images is not None:
        size = (p.width, p.height)
        channels = pipe.image_channels
        x = torch.cat([load_image(path, size, channels) for path in images])
        noise_a = pipe.invert(x[:1], p.prompt, p.steps)
        noise_b = pipe.invert(x[1:], prompt_b, p.steps)
    else:
        noise_a = pipe.noise(p, 1)[0]
        noise_b = pipe.noise(replace(p, seed=p.seed if seed_b is None else seed_b), 1)[0]
    noise = torch.cat([slerp(noise_a, noise_b, t) for t in ts])
    cond = lerp_cond(pipe.encode_text([p.prompt]), pipe.encode_text([prompt_b]), ts)
    return pipe.generate(p, frames, cond=cond, noise=noise)


def strip(images: list[Image.Image]) -> Image.Image:
    """Images side by side, left to right."""
    w, h = images[0].size
    out = Image.new(images[0].mode, (w * len(images), h))
    for i, img in enumerate(images):
        out.paste(img, (i * w, 0))
    return out


def interpolate_to_file(args: argparse.Namespace) -> Path:
    """The `t2i interpolate` command: check, load, sample the frames, write one strip PNG."""
    (out,) = output_paths(args.out, [args.seed])  # a .png in a writable folder, not a folder
    if len(args.prompts) > 2:
        raise ValueError(f"give one or two prompts, got {len(args.prompts)}")
    if args.seeds and len(args.seeds) != 2:
        raise ValueError(f"--seeds takes two seeds, got {args.seeds}")
    if args.images and len(args.images) != 2:
        raise ValueError(f"--images takes two image files, got {args.images}")
    frame_times(args.frames)
    pipe = load(args.model or "shapes")
    seed_a, seed_b = args.seeds or (args.seed, args.seed)
    kw = {"negative": args.negative, "steps": args.steps, "seed": seed_a, "size": args.size}
    if args.images:  # the deterministic setting that inverts
        kw.update(sampler="ddim", guidance=1.0)
        kw["size"] = kw["size"] or read_image_size(args.images[0])
    else:
        kw.update(sampler=args.sampler, guidance=args.guidance)
    p = pipe.params(args.prompts[0], **kw)
    prompt_b = args.prompts[1] if len(args.prompts) == 2 else None
    images = interpolate(pipe, p, args.frames, prompt_b, seed_b, args.images)
    return save_png(strip(to_pil(images)), out, p)
