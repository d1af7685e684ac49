"""UNet speed: t2i's UNet against diffusers' UNet2DConditionModel at a matched configuration.

Both models run in this one process on the same threads, repetitions interleaved, medians reported;
bf16 through `torch.autocast("cpu", dtype=torch.bfloat16)` for both. Also measures the machine's
matmul peak (fp32, bf16) and prints parameter counts and per-image FLOPs of every preset.

    python3 benchmarks/bench_unet.py                 # full run (a few minutes on 2 cores)
    python3 benchmarks/bench_unet.py --reps 5 --batches 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from t2i.models.unet import UNET_PRESETS, UNet, UNetConfig


def matmul_peak(dtype: torch.dtype, clock, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a large square matmul."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t0 = clock()
        a @ b
        times.append(clock() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def attention_backends(reps: int, clock) -> None:
    """fwd+bwd of PyTorch's fused SDPA against written-out attention at the UNet's shapes."""
    print("| attention (B, heads, N, L, d) | dtype | SDPA fwd+bwd ms | written-out ms |")
    print("|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        for b, h, n, l, d in ((16, 4, 64, 64, 32), (16, 4, 64, 16, 32), (16, 8, 16, 16, 32)):
            qkv = [torch.randn(b, h, s, d, dtype=dtype, requires_grad=True) for s in (n, l, l)]

            def manual(q, k, v):
                s = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
                return s.softmax(-1) @ v

            res = []
            for fn in (F.scaled_dot_product_attention, manual):
                ts = []
                for _ in range(reps):
                    t0 = clock()
                    fn(*qkv).sum().backward()
                    ts.append(clock() - t0)
                res.append(statistics.median(ts) * 1e3)
            print(f"| {(b, h, n, l, d)} | {str(dtype)[6:]} | {res[0]:.2f} | {res[1]:.2f} |")


def diffusers_unet(c: UNetConfig, sample_size: int):
    """diffusers' UNet2DConditionModel with the same channels, levels, attention placement."""
    from diffusers import UNet2DConditionModel

    n = len(c.channels)
    attn = [i in c.attention_levels for i in range(n)]
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=c.in_channels,
        out_channels=c.out_channels or c.in_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=c.channels,
        layers_per_block=c.layers_per_block,
        cross_attention_dim=c.context_dim,
        attention_head_dim=tuple(ch // c.head_dim for ch in c.channels),  # = number of heads
        norm_num_groups=c.groups,
        use_linear_projection=True,
    )


def make_steps(model, is_diffusers: bool, x, t, ctx):
    def fwd():
        if is_diffusers:
            return model(x, t, encoder_hidden_states=ctx).sample
        return model(x, t, ctx)

    def forward():
        with torch.no_grad():
            fwd()

    def train():
        model.zero_grad(set_to_none=True)
        F.mse_loss(fwd().float(), x.float()).backward()

    return forward, train


def flops_of(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def compare(c: UNetConfig, size: int, batches, reps: int, clock) -> None:
    torch.manual_seed(0)
    ours, theirs = UNet(c), diffusers_unet(c, size)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    print(
        f"params: t2i {n_ours / 1e6:.3f} M, diffusers {n_theirs / 1e6:.3f} M "
        f"(ratio {n_ours / n_theirs:.4f})"
    )
    print(
        "| dtype | batch | step | t2i ms | diffusers ms | speed-up | t2i GFLOP/s | min speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        for b in batches:
            x = torch.randn(b, c.in_channels, size, size)
            t = torch.rand(b) * 999
            ctx = torch.randn(b, 16, c.context_dim)
            steps = {}
            for name, m in (("t2i", ours), ("diffusers", theirs)):
                steps[name] = make_steps(m, name == "diffusers", x, t, ctx)
            cast = (
                torch.autocast("cpu", dtype=torch.bfloat16)
                if dtype == torch.bfloat16
                else contextlib.nullcontext()
            )
            with cast:
                for kind, idx in (("forward", 0), ("fwd+bwd", 1)):
                    fl = flops_of(steps["t2i"][idx])
                    times = {"t2i": [], "diffusers": []}
                    for name in times:  # warm-up
                        steps[name][idx]()
                    for _ in range(reps):
                        for name in times:
                            t0 = clock()
                            steps[name][idx]()
                            times[name].append(clock() - t0)
                    med = {k: statistics.median(v) for k, v in times.items()}
                    low = {k: min(v) for k, v in times.items()}  # least disturbed by other jobs
                    dt = "fp32" if dtype == torch.float32 else "bf16"
                    print(
                        f"| {dt} | {b} | {kind} | {med['t2i'] * 1e3:.1f} | "
                        f"{med['diffusers'] * 1e3:.1f} | {med['diffusers'] / med['t2i']:.2f}x | "
                        f"{fl / med['t2i'] / 1e9:.0f} | {low['diffusers'] / low['t2i']:.2f}x |",
                        flush=True,
                    )


def sampling_cost(clock, steps: int = 20) -> None:
    """Network time of sampling one 64x64 image with the `small` preset: `steps` CFG evaluations
    (conditional + unconditional in one batch of 2)."""
    c = UNetConfig.preset("small")
    net = UNet(c).eval()
    x, ctx = torch.randn(2, 3, 64, 64), torch.randn(2, 16, c.context_dim)
    for name, cast in (
        ("fp32", contextlib.nullcontext()),
        ("bf16", torch.autocast("cpu", dtype=torch.bfloat16)),
    ):
        with torch.no_grad(), cast:
            net(x, torch.ones(2), ctx)  # warm-up
            t0 = clock()
            for i in range(steps):
                net(x, torch.full((2,), 999.0 - 50 * i), ctx)
            dt = clock() - t0
        print(f"sampling cost, preset small, 64x64, {steps} CFG steps, {name}: {dt:.2f} s")


def _params(m) -> float:
    return sum(p.numel() for p in m.parameters()) / 1e6


def preset_table() -> None:
    """Parameters and forward FLOPs per image (per prompt for text) of every network preset."""
    from t2i.models.autoencoder import AE_PRESETS, VQ_PRESETS, AutoencoderKL, AutoencoderVQ
    from t2i.models.clip import CLIP, CLIP_PRESETS
    from t2i.models.text_encoder import TEXT_PRESETS, TextTransformer
    from t2i.models.token_transformer import TOKEN_PRESETS, TokenTransformer

    print("| network | preset | input | params (M) | GFLOP / image (forward) |")
    print("|---|---|---|---|---|")

    def row(kind, name, inp, m, fn):
        with torch.no_grad():
            fl = flops_of(fn)
        print(f"| {kind} | {name} | {inp} | {_params(m):.2f} | {fl / 1e9:.3f} |")

    for name, c in UNET_PRESETS.items():
        m = UNet(c)
        for size in (16, 32, 64) if c.in_channels == 3 else (16, 32):
            x = torch.randn(1, c.in_channels, size, size)
            ctx = torch.randn(1, 16, c.context_dim) if c.context_dim else None
            row(
                "UNet",
                name,
                f"{c.in_channels}x{size}x{size}, 16 tokens",
                m,
                lambda m=m, x=x, ctx=ctx: m(x, torch.ones(1), ctx),
            )
    for cls, presets in ((AutoencoderKL, AE_PRESETS), (AutoencoderVQ, VQ_PRESETS)):
        for name, c in presets.items():
            m, x = cls(c), torch.randn(1, 3, 64, 64)
            row(
                f"{cls.__name__} (f{c.factor}, encode+decode)",
                name,
                "3x64x64",
                m,
                lambda m=m, x=x: m(x),
            )
    vocab = [f"w{i}" for i in range(2000)]
    for name, c in TEXT_PRESETS.items():
        m = TextTransformer(replace(c, vocab=vocab))
        row(
            "TextTransformer (2k words)",
            name,
            "16 tokens",
            m,
            lambda m=m: m(torch.ones(1, 16, dtype=torch.long), torch.ones(1, 16, dtype=torch.bool)),
        )
    for name, c in TOKEN_PRESETS.items():
        m = TokenTransformer(c)
        codes, ctx = torch.zeros(1, c.length, dtype=torch.long), torch.randn(1, 16, c.context_dim)
        row(
            "TokenTransformer (teacher-forced, all codes)",
            name,
            f"{c.grid}x{c.grid} codes of {c.codebook_size}, 16 tokens",
            m,
            lambda m=m, codes=codes, ctx=ctx: m(codes, ctx),
        )
    for name, c in CLIP_PRESETS.items():
        m = CLIP(c)
        x = torch.randn(1, 3, c.image_size, c.image_size)
        row(
            "CLIP image encoder",
            name,
            f"3x{c.image_size}x{c.image_size}",
            m,
            lambda m=m, x=x: m.encode_image(x),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--preset", default="latent", help="UNet preset to compare")
    parser.add_argument("--size", type=int, default=16, help="latent height = width")
    parser.add_argument("--skip-presets", action="store_true")
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="process: CPU time of this process (robust on a busy machine with --threads 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"load average {load}"
    )
    print(
        f"matmul peak: fp32 {matmul_peak(torch.float32, clock):.0f} GFLOP/s, "
        f"bf16 {matmul_peak(torch.bfloat16, clock):.0f} GFLOP/s"
    )
    c = UNetConfig.preset(args.preset)
    print(f"config: preset {args.preset!r}, {c.in_channels}x{args.size}x{args.size}, {c}")
    compare(c, args.size, args.batches, args.reps, clock)
    attention_backends(args.reps, clock)
    sampling_cost(clock)
    if not args.skip_presets:
        preset_table()


if __name__ == "__main__":
    main()
