"""The autoencoder's decoder, the step every latent image ends with: seconds per image in each
memory layout and precision, and how far each moves the pixels from the plain fp32 decode.

At 4 sampling steps the decoder is about a third of a call (`emoji-lcm`, batch 8), so its speed
decides how much of the distillation's gain reaches the user. The pipeline keeps the decoder
channels-last in fp32 (t2i/pipeline.py); bf16 is the --bf16 flag's.

    python3 benchmarks/bench_decode.py --model emoji --repeats 5

Prints one JSON line per (layout, precision, batch), in one process, on the cores it is given.
"""

from __future__ import annotations

import argparse
import json

import torch
from timing import median_seconds  # benchmarks/timing.py, beside this script

import t2i

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def decode(autoencoder, z: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return autoencoder.from_latent(z).float().clamp(-1, 1)


def seconds_per_image(autoencoder, z: torch.Tensor, bf16: bool, repeats: int) -> float:
    """Median over `repeats` decodes of the batch z (after one warm-up), per image."""
    return median_seconds(lambda: decode(autoencoder, z, bf16), repeats) / len(z)


def rows(model: str, repeats: int, size: int = 64) -> list[dict]:
    pipe = t2i.load(model)
    if pipe.autoencoder is None:
        raise ValueError(f"{model} is a pixel model: it has no decoder to time")
    autoencoder = pipe.autoencoder.eval()
    shape = (pipe.unet.config.in_channels, *pipe.latent_size(size, size))
    out = []
    for batch in (1, 8):
        z = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
        reference = None
        for layout, fmt in LAYOUTS.items():
            autoencoder.to(memory_format=fmt)
            for bf16 in (False, True):
                images = decode(autoencoder, z, bf16)
                reference = images if reference is None else reference
                row = {"model": model, "batch": batch, "layout": layout, "bf16": bf16}
                row["s_per_image"] = round(seconds_per_image(autoencoder, z, bf16, repeats), 5)
                row["max_levels_moved"] = round((images - reference).abs().max().item() * 127.5, 4)
                out.append(row)
                print(json.dumps(row), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="emoji", help="a latent model (its folder or bundled name)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per row (median)")
    args = ap.parse_args()
    rows(args.model, args.repeats)


if __name__ == "__main__":
    main()
