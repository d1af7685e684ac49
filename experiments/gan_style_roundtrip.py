"""How well a GAN's style encoder reads z back: ||z - S(G(z, t))||^2 on fresh noise and captions
of the test split, and the RMS pixel distance between G(z, t) and its redraw G(S(G(z, t)), t),
beside two independent draws G(z, t), G(z', t) (what a useless encoder would give).

    python3 experiments/gan_style_roundtrip.py runs/gan/fashion/model --data fashion --n 256
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import t2i
from t2i.data import load_dataset
from t2i.gan_pipeline import noise


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=256)
    args = ap.parse_args()
    pipe = t2i.load(args.model)
    ds = load_dataset(args.data, image_size=pipe.image_size, split="test")
    prompts = [ds[i]["caption"] for i in range(args.n)]
    cond = pipe.encode_text(prompts)
    z_dim = pipe.net.config.z_dim
    z = noise(z_dim, list(range(args.n)))
    other = noise(z_dim, list(range(args.n, 2 * args.n)))
    images = pipe.net(z, cond["context"], cond["context_mask"])
    z_read = pipe.net.style(images)
    redrawn = pipe.net(z_read, cond["context"], cond["context_mask"])
    independent = pipe.net(other, cond["context"], cond["context_mask"])
    rms = lambda a, b: (a - b).pow(2).flatten(1).mean(1).sqrt().mean().item()  # noqa: E731
    print(f"||z - S(G(z))||^2 per dimension: {F.mse_loss(z_read, z):.3f} (z's own: 1)")
    redraw, apart = rms(redrawn, images), rms(independent, images)
    print(f"RMS pixels to G(z, t): its redraw {redraw:.3f}, an independent draw {apart:.3f}")


if __name__ == "__main__":
    main()
