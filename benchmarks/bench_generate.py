"""Time to generate: one 64x64 image at 20 steps with classifier-free guidance, batch 1 and 8.

The whole `generate` call is timed (prompt encoding, sampler, decoding), as `t2i generate`
runs it after loading: fp32, and with the UNet under bf16 autocast (`t2i.load(..., bf16=True)`).
The bf16 row also gives its accuracy against fp32 on the same seeds: PSNR of the 8-bit images.
Settings are interleaved over the repeats and medians reported (the machine is shared).
`--interval LO,HI` adds a bf16 row with classifier-free guidance only where LO < sigma <= HI
(the other steps run the conditional branch alone); its images differ by design, so no PSNR.
`--unet-batches 1,2,8,16,32` times instead one bare UNet call (bf16 autocast) per batch size: how
a call's cost splits into a fixed part and a part per image.

    python3 benchmarks/bench_generate.py --model shapes          # bundled model or a model folder
    python3 benchmarks/bench_generate.py --model DIR --threads 2 --repeats 5
    python3 benchmarks/bench_generate.py --model emoji --guidance 5 --interval all \
        --prompt "fox emoji, 3d style"
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import t2i


def psnr_8bit(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two image batches in [-1, 1], after 8-bit quantisation."""
    qa, qb = ((t.clamp(-1, 1) + 1) * 127.5 for t in (a, b))
    mse = (qa.round() - qb.round()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0**2 / mse)).item()


@torch.no_grad()
def unet_call_times(pipe, prompt: str, batches: list[int], repeats: int) -> None:
    """Median ms of one UNet call (bf16 autocast) on the prompt's text states, per batch size."""
    cond = pipe.encode_text([prompt])
    c = pipe.unet.config
    side = pipe.latent_size(pipe.image_size, pipe.image_size)[0]
    print("| batch | ms per UNet call | ms per image |")
    print("|---|---|---|")
    for b in batches:
        x = torch.randn(b, c.in_channels, side, side)
        t = torch.full((b,), 500.0)
        context, mask = (v.expand(b, *v.shape[1:]) for v in cond.values())
        times = []
        with torch.autocast("cpu", torch.bfloat16):
            for _ in range(repeats + 2):  # two warm-up calls
                start = time.perf_counter()
                pipe.unet(x, t, context, mask)
                times.append(time.perf_counter() - start)
        ms = statistics.median(times[2:]) * 1000
        print(f"| {b} | {ms:.1f} | {ms / b:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--interval",
        action="append",
        default=[],
        help="'LO,HI' or 'all': add a bf16 row guided only there (repeatable)",
    )
    ap.add_argument("--unet-batches", default=None, help="time bare UNet calls at these batches")
    ap.add_argument(
        "--prompt",
        default="a red circle above a blue square",
        help="the cost does not depend on it; bf16's PSNR does (a prompt far from the model's "
        "data gives chaotic unguided steps)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.unet_batches:
        batches = [int(b) for b in args.unet_batches.split(",")]
        return unet_call_times(t2i.load(args.model, bf16=True), args.prompt, batches, args.repeats)
    fp32, bf16 = t2i.load(args.model), t2i.load(args.model, bf16=True)
    batches = [int(b) for b in args.batches.split(",")]

    def params(interval):
        return fp32.params(
            args.prompt, steps=args.steps, guidance=args.guidance, guidance_interval=interval
        )

    base = params(None)  # the model's default interval
    settings = {"fp32": (fp32, base), "bf16": (bf16, base)}
    for text in args.interval:
        interval = text if text == "all" else tuple(float(v) for v in text.split(","))
        settings[f"bf16, guided on {text}"] = (bf16, params(interval))
    size = f"{base.width}x{base.height}"
    for pipe, p in settings.values():  # warm-up: caches the prompt's text states, first calls
        pipe.generate(p, 1)
    times = {(k, b): [] for k in settings for b in batches}
    outputs = {}
    for _ in range(args.repeats):
        for b in batches:
            for key, (pipe, p) in settings.items():
                start = time.perf_counter()
                outputs[key, b] = pipe.generate(p, b)
                times[key, b].append(time.perf_counter() - start)
    print(f"model {args.model}, {size}, {args.steps} steps {base.sampler}, guidance")
    print(f"{args.guidance} (model's interval {base.guidance_interval or 'all'}),")
    print(f"{args.threads} threads, median of {args.repeats}\n")
    print("| setting | batch | s per call | s per image | PSNR vs fp32 (dB) |")
    print("|---|---|---|---|---|")
    for (key, b), ts in times.items():
        med = statistics.median(ts)
        same = settings[key][1] == base and key != "fp32"
        acc = f"{psnr_8bit(outputs[key, b], outputs['fp32', b]):.1f}" if same else "-"
        print(f"| {key} | {b} | {med:.3f} | {med / b:.3f} | {acc} |")


if __name__ == "__main__":
    main()
