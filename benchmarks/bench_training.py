"""Training throughput: the diffusion recipe's step vs diffusers' UNet2DConditionModel in a plain
AdamW loop at the matched configuration; bf16 autocast on/off; peak memory of each recipe.

The t2i step is the loop's own `_step` (denoiser loss, caption dropout, AdamW, clipping) plus the
EMA update; the diffusers step is forward, MSE on eps, backward, AdamW. Same batch, same cached
text states (B, 40, 384) with their mask, same threads; repetitions interleaved, medians reported.

    python3 benchmarks/bench_training.py            # throughput, preset "shapes_small", batch 16
    python3 benchmarks/bench_training.py --memory   # + peak RSS of each default preset
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from t2i.data import load_dataset
from t2i.models.unet import UNet, UNetConfig
from t2i.training import diffusion
from t2i.training.config import LoopConfig
from t2i.training.data import TextCache
from t2i.training.dist import World
from t2i.training.loop import _LossModule, _step, ema_update


def diffusers_unet(c: UNetConfig, size: int):
    """UNet2DConditionModel with t2i's channels, blocks, attention levels and head width."""
    from diffusers import UNet2DConditionModel

    attn = [i in c.attention_levels for i in range(len(c.channels))]
    return UNet2DConditionModel(
        sample_size=size,
        in_channels=c.in_channels,
        out_channels=c.out_channels or c.in_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attn[::-1]),
        block_out_channels=c.channels,
        layers_per_block=c.layers_per_block,
        cross_attention_dim=c.context_dim,
        attention_head_dim=tuple(ch // c.head_dim for ch in c.channels),  # diffusers: = heads
        norm_num_groups=c.groups,
        use_linear_projection=True,
    )


def t2i_step(cfg, batch, items, text, bf16: bool, channels_last: bool | None = None):
    """A closure running one optimizer step of the diffusion recipe (its layout by default)."""
    cfg = copy.deepcopy(cfg)
    cfg.channels_last = cfg.channels_last if channels_last is None else channels_last
    torch.manual_seed(0)
    net = UNet(cfg.model)
    recipe = diffusion.diffusion_recipe(cfg, net, items, text, None, "bench")
    ema = copy.deepcopy(net).requires_grad_(False)  # as the loop builds it
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)  # as the loop builds it
    loop = LoopConfig(steps=10**9, batch_size=len(batch["captions"]), bf16=bf16)
    batches = itertools.repeat(recipe.collate(items))  # in the layout the recipe collates
    wrapped, count = _LossModule(net, recipe.loss), [0]

    def step():
        _step(wrapped, net, opt, batches, loop, cfg.optim, World(), count[0])
        ema_update(ema, net, 0.999)
        count[0] += 1

    return step


def diffusers_step(cfg, batch, text, bf16: bool):
    torch.manual_seed(0)
    unet = diffusers_unet(cfg.model, cfg.image_size)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    x0 = batch["x0"]
    ctx, mask = text(batch["captions"])
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            t = torch.randint(0, 1000, (len(x0),))
            noise = torch.randn_like(x0)
            a = abar[t].view(-1, 1, 1, 1)
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
            eps = unet(x_t, t, encoder_hidden_states=ctx, encoder_attention_mask=mask).sample
            loss = F.mse_loss(eps.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def throughput(args) -> None:
    cfg = diffusion.preset(args.preset)
    data = load_dataset("shapes", image_size=cfg.image_size, length=args.batch)
    items = [data[i] for i in range(args.batch)]
    batch = {
        "x0": torch.stack([it["image"] for it in items]),
        "captions": [it["caption"] for it in items],
    }
    text = TextCache.load(cfg.text_encoder, cfg.max_tokens)
    text(batch["captions"] + [""])  # warm the cache: the recipe's steady state
    n = sum(p.numel() for p in UNet(cfg.model).parameters())
    n_d = sum(p.numel() for p in diffusers_unet(cfg.model, cfg.image_size).parameters())
    print(
        f"preset {args.preset!r}: {cfg.model.in_channels}x{cfg.image_size}x{cfg.image_size}, "
        f"batch {args.batch}, params t2i {n / 1e6:.2f} M, diffusers {n_d / 1e6:.2f} M; recipe "
        f"defaults here: bf16 {cfg.loop.bf16}, channels_last {cfg.channels_last}"
    )
    steps = {
        "t2i fp32": t2i_step(cfg, batch, items, text, False),
        "t2i bf16": t2i_step(cfg, batch, items, text, True),
        "diffusers fp32": diffusers_step(cfg, batch, text, False),
        "diffusers bf16": diffusers_step(cfg, batch, text, True),
    }
    if args.nhwc:  # the recipe with --channels_last true, both precisions
        steps["t2i fp32 NHWC"] = t2i_step(cfg, batch, items, text, False, channels_last=True)
        steps["t2i bf16 NHWC"] = t2i_step(cfg, batch, items, text, True, channels_last=True)
    times = {k: [] for k in steps}
    for fn in steps.values():
        fn()  # warm-up
    for _ in range(args.reps):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["diffusers fp32"])
    print("| step | ms / step (median) | images/s | vs diffusers fp32 |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.0f} | {args.batch / med:.1f} | {base / med:.2f}x |")


def peak_memory(steps: int) -> None:
    """Peak RSS of `t2i train <recipe>` (preset default) for a few steps, one process each."""
    # VmHWM, not ru_maxrss: after fork + exec ru_maxrss starts at the (large) parent's peak
    code = (
        "import sys, tempfile\n"
        "from t2i.training.__main__ import main\n"
        "assert main(sys.argv[1:] + ['--out', tempfile.mkdtemp()]) == 0\n"
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]\n"
        "print('RSS_MB', int(hwm.split()[1]) / 1024)\n"
    )
    print("| recipe (preset default) | batch | peak RSS (MB) |")
    print("|---|---|---|")
    for recipe in ("diffusion", "autoencoder", "clip"):
        args = [
            recipe,
            "--data",
            "shapes",
            "--no-progress",
            "--loop.steps",
            str(steps),
            "--loop.sample_every",
            "0",
        ]
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        rss = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("RSS_MB")]
        batch = {"diffusion": 32, "autoencoder": 16, "clip": 64}[recipe]
        print(f"| {recipe} | {batch} | {float(rss[0]):.0f} |" if rss else proc.stderr[-500:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--preset", default="shapes_small")
    parser.add_argument("--nhwc", action="store_true", help="also the t2i step in channels_last")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS per recipe")
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput table")
    parser.add_argument("--memory-steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.memory_only:
        throughput(args)
    if args.memory or args.memory_only:
        peak_memory(args.memory_steps)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
