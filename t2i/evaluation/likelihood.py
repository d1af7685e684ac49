"""`t2i eval MODEL --data D --nll N`: bits per dimension of N held-out real images given their
captions, through the family's own `likelihood` (t2i/protocol.py), each figure stated as what it
is: a bound is not an exact likelihood, and bounds of different families compare only as upper
bounds on the same -log2 p(x | caption).

    report = likelihood_report(t2i.load("fashion"), "fashion", images=100)
"""

from __future__ import annotations

import math
import time

import torch

from t2i.data import load_dataset
from t2i.evaluation.suites import suite_for

MAX_IMAGES = 10_000
WHAT = {
    "diffusion": (
        "the variational bound L_T + sum_t L_{t-1} + L_0 (Ho et al. 2020; closed-form Gaussian "
        "KLs, an 8-bit discretised Gaussian decoder) in bits per dimension: an upper bound on "
        "-log2 p(x | caption) per pixel value; one figure per reverse variance: 'small' "
        "beta~_t, 'large' beta_t, 'learned' the model's own; with a learnt schedule also "
        "'continuous', its continuous-time bound (Kingma et al. 2021), from draws of t"
    ),
    "autoregressive": (
        "'bound': the exact -log2 p(codes | caption) of the image's VQ codes plus -log2 p(x | "
        "codes) under an 8-bit discretised Gaussian around the decoder's image (one std fitted "
        "to these images), per pixel value: an upper bound on -log2 p(x | caption); 'codes': "
        "the first term alone"
    ),
    "draw": (
        "'elbo': the negative evidence lower bound of AlignDRAW (an 8-bit discretised Gaussian "
        "around its canvas, one learnt std per channel, plus the KL of every step's posterior "
        "to its learnt prior; one posterior sample per image) per pixel value: an upper bound "
        "on -log2 p(x | caption); 'reconstruction' and 'kl' its two parts"
    ),
}
HELD_OUT = {"fashion": "test", "shapes": "test", "folder": "heldout"}


def heldout_images(data: str, image_size: int, n: int) -> tuple[torch.Tensor, list[str]]:
    """The first n held-out images (N, C, H, W) in [-1, 1] on 8 bits and their captions."""
    if not 2 <= n <= MAX_IMAGES:
        raise ValueError(f"--nll takes 2 to {MAX_IMAGES} images (a stderr needs 2), got {n}")
    split = HELD_OUT[suite_for(data)]
    dataset = load_dataset(data, split=split, image_size=image_size)
    if len(dataset) < n:
        raise ValueError(f"{data}: its {split} split has {len(dataset)} images, fewer than {n}")
    items = [dataset[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), [it["caption"] for it in items]


def likelihood_report(
    pipe,
    data: str,
    images: int = 100,
    timesteps: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
) -> dict:
    """{"bits_per_dim": {variant: {"value", "stderr"}}, "what", "estimator", ...} over the
    held-out images, in batches; `timesteps` None sums every step exactly, K estimates the sum
    from K steps drawn per image (its stderr then holds that draw's spread too)."""
    if timesteps is not None and timesteps < 2:
        raise ValueError(f"--nll-timesteps must be >= 2 (or 'all'), got {timesteps}")
    x0, captions = heldout_images(data, pipe.image_size, images)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    per_image: dict[str, list[torch.Tensor]] = {}
    for lo in range(0, len(x0), batch_size):
        found = pipe.likelihood(
            x0[lo : lo + batch_size], captions[lo : lo + batch_size], timesteps, generator
        )
        for variant, bits in found.items():
            per_image.setdefault(variant, []).append(bits)
    figures = {}
    for variant, parts in per_image.items():
        bits = torch.cat(parts)
        stderr = float(bits.std()) / math.sqrt(len(bits))
        nats = float(bits.mean()) * x0[0].numel() * math.log(2)
        figures[variant] = {
            "value": round(float(bits.mean()), 4),
            "stderr": round(stderr, 4),
            "nats_per_image": round(nats, 1),
        }
    return {
        "bits_per_dim": figures,
        "what": WHAT.get(pipe.family, pipe.family),
        "estimator": estimator(pipe.family, timesteps),
        "images": images,
        "data": f"{data} ({HELD_OUT[suite_for(data)]} split), given their captions, no guidance",
        "seconds": round(time.perf_counter() - start, 1),
    }


def estimator(family: str, timesteps: int | None) -> str:
    if family == "draw":  # its bound is an expectation over the posterior's draws
        return "one posterior sample per image (an unbiased estimate of the bound)"
    if timesteps is None:
        return "exact sum over every step"
    return f"{timesteps} steps drawn per image (unbiased)"


def format_likelihood(report: dict) -> str:
    lines = [f"{report['images']} images of {report['data']}; {report['estimator']}"]
    for variant, fig in report["bits_per_dim"].items():
        lines.append(
            f"  bits/dim ({variant:7s}) {fig['value']:.4f} +- {fig['stderr']:.4f}"
            f"   ({fig['nats_per_image']} nats per image)"
        )
    lines.append(f"what: {report['what']}")
    return "\n".join(lines)
