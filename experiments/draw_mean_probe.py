"""Why AlignDRAW's mean is the canvas itself, not tanh(canvas): 400 steps of the `shapes` preset's
network at batch 32 (bf16 autocast, one thread), the same seeds, one run per choice; the mean loss
(nats per dimension) of each 50 steps and the KL (nats per image) of the last batch.

    OMP_NUM_THREADS=1 python3 experiments/draw_mean_probe.py --mean tanh
    OMP_NUM_THREADS=1 python3 experiments/draw_mean_probe.py --mean canvas

Figures in docs/history.md, "AlignDRAW".
"""

from __future__ import annotations

import argparse
import time

import torch

import t2i.models.draw as draw
from t2i.data import load_dataset
from t2i.draw_pipeline import elbo
from t2i.models.draw import DrawConfig, DrawNet
from t2i.models.text_encoder import TextLSTM, TextLSTMConfig, build_vocab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mean", choices=("tanh", "canvas"), required=True)
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    if args.mean == "tanh":
        draw.image_mean = torch.tanh  # the module reads it at each call
    torch.manual_seed(0)
    data = load_dataset("shapes", image_size=64, length=4000)
    text = TextLSTM(TextLSTMConfig(vocab=build_vocab(data[i]["caption"] for i in range(500))))
    net = DrawNet(DrawConfig.preset("shapes"))
    params = [*net.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, 1e-3, weight_decay=0)
    g = torch.Generator().manual_seed(0)
    start, losses = time.time(), []
    for step in range(args.steps):
        items = [data[i] for i in torch.randint(0, 4000, (32,), generator=g).tolist()]
        x = torch.stack([it["image"] for it in items])
        with torch.autocast("cpu", torch.bfloat16):
            emb = text.encode([it["caption"] for it in items])
            noise = torch.randn(32, net.config.steps, net.config.z_dim, generator=g)
            recon, kl = elbo(net, x, emb.context, emb.mask, noise)
        loss = (recon + kl).mean() / x[0].numel()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 49:
            mean = sum(losses[-50:]) / 50
            took = time.time() - start
            print(f"step {step + 1}: loss {mean:.3f}, kl {kl.mean():.1f}, {took:.0f} s")


if __name__ == "__main__":
    main()
