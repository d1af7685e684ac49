"""A learned-schedule model's continuous-time bound with and without its x0 estimate clamped to
[-1, 1] (the discrete sum clamps it), on the first 100 Fashion-MNIST test images given their
captions, 100 draws of t per image:

    python3 experiments/continuous_clip.py runs/lik_vdm/model
"""

from __future__ import annotations

import argparse
import json

import torch

import t2i
from t2i.evaluation.likelihood import heldout_images
from t2i.likelihood import continuous_bits
from t2i.models.log_snr import LearnedLogSNR
from t2i.schedules import DiscreteSchedule


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--draws", type=int, default=100)
    args = ap.parse_args()
    pipe = t2i.load(args.model)
    x0, captions = heldout_images("fashion", 32, args.images)
    cond = pipe.encode_text(captions)
    schedule = DiscreteSchedule.from_dict(pipe.index["schedule"])
    log_snr = LearnedLogSNR.from_dict(schedule.log_snr)
    for clip in (True, False):
        gen = torch.Generator().manual_seed(0)
        bits = continuous_bits(pipe.denoiser, x0, log_snr, args.draws, gen, cond, clip=clip)
        stderr = float(bits.std()) / len(bits) ** 0.5
        print(
            json.dumps(
                {
                    "clip": clip,
                    "bits_per_dim": round(float(bits.mean()), 4),
                    "stderr": round(stderr, 4),
                }
            )
        )


if __name__ == "__main__":
    main()
