"""What one guided sampler step costs by each gradient path, on the bundled `emoji` model (latent:
4 x 16 x 16 through a KL decoder to 64 x 64 pixels), batch 8:

    unguided      the UNet's forward alone (CFG off)
    latent guide  UNet forward without a graph + a guide on the noisy latents, forward and
                  backward (what t2i/guides does)
    through x0    a pixel-space network on the decoded x0_hat: UNet forward with a graph, decoder
                  forward, the network, and the backward pass through all three (how a guide
                  trained on clean pixels would have to be used)

The pixel network here is the emoji evaluation CLIP's image tower (timing only: a judge never
guides a figure it judges). Run on idle cores:

    OMP_NUM_THREADS=2 python3 benchmarks/bench_guidance_path.py --guide runs/g_emoji_clip/model
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import median_seconds  # benchmarks/timing.py, beside this script

from t2i.evaluation.emoji_clip import load_emoji_clip, to_input
from t2i.families import load
from t2i.guides.guide import load_guide


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--guide", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    pipe = load("emoji")
    guide = load_guide(args.guide)
    clip = load_emoji_clip()
    cond = pipe.encode_text(["fox emoji, noto style"] * args.batch)
    x = torch.randn(args.batch, 4, 16, 16) * 3.0
    sigma = torch.full((args.batch,), 3.0)
    text = guide.targets(["fox emoji, noto style"] * args.batch, cond)["text"]

    def unguided():
        with torch.no_grad():
            pipe.denoiser(x, sigma, **cond)

    def latent_guide():
        with torch.no_grad():
            pipe.denoiser(x, sigma, **cond)
        x_in = x.clone().requires_grad_(True)
        guide.log_prob(x_in, sigma, text=text).sum().backward()

    def through_x0():
        x_in = x.clone().requires_grad_(True)
        x0 = pipe.denoiser(x_in, sigma, **cond)
        pixels = pipe.autoencoder.from_latent(x0)
        clip.encode_image(to_input(clip, pixels)).sum().backward()

    rows = {
        name: median_seconds(fn, args.repeats)
        for name, fn in (
            ("unguided", unguided),
            ("latent guide", latent_guide),
            ("through x0", through_x0),
        )
    }
    base = rows["unguided"]
    out = {
        k: {"s_per_step": round(v, 4), "x_unguided": round(v / base, 2)} for k, v in rows.items()
    }
    print(json.dumps({"batch": args.batch, "threads": torch.get_num_threads(), **out}, indent=1))


if __name__ == "__main__":
    main()
