"""unCLIP against the direct text-to-image model on the same data, and its priors against each
other (issue 31). Every figure through the project's own paths: the priors' held-out cosine by
the recipe's `prior_scores`, R-precision and FD by `t2i eval`'s `evaluate` with the
**evaluation** CLIP (t2i/evaluation/extractors/emoji_clip, never the generation CLIP the unCLIP
model reads), diversity as the mean pairwise distance of images of one prompt.

    OMP_NUM_THREADS=1 python3 benchmarks/bench_unclip.py --unclip runs/unclip/decoder/model \\
        --direct emoji --data data_cache/emoji64 \\
        --prior diffusion=runs/unclip/prior_diff/model \\
        --prior regression=runs/unclip/prior_reg/model \\
        --n 200 --out docs/training/unclip/bench.json
    OMP_NUM_THREADS=1 python3 benchmarks/bench_unclip.py --unclip runs/unclip/decoder/model \\
        --direct emoji --data data_cache/emoji64 --variations 100 --variations-only \\
        --out docs/training/unclip/bench.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import t2i
from t2i.checkpoint import load_component
from t2i.data import load_dataset
from t2i.denoisers import make_denoiser
from t2i.evaluation.emoji_clip import load_emoji_clip, load_images, load_rows, to_input
from t2i.evaluation.evaluate import evaluate
from t2i.evaluation.suites import EvalConfig
from t2i.models.unclip import DiffusionPrior
from t2i.schedules import DiscreteSchedule
from t2i.training.data import TextCache
from t2i.training.diffusion_prior import embedded_pairs, prior_scores, read_card


def prior_figures(pipe, priors: dict[str, Path], data: str) -> dict:
    """Held-out cosine of each prior, on the generation CLIP of the unCLIP model."""
    held = embedded_pairs(pipe.clip, load_dataset(data, image_size=64, split="heldout"))
    text = TextCache.load("minilm", 32)
    out = {}
    for name, folder in priors.items():
        card = read_card(folder)
        prior = load_component(folder)
        sampling = card["sampling"]
        denoiser = None
        if isinstance(prior, DiffusionPrior):
            schedule = DiscreteSchedule.from_dict(sampling["schedule"])
            denoiser = make_denoiser(prior, "x0", schedule).eval()
        cfg = SimpleNamespace(candidates=2, sample_steps=sampling["steps"])
        out[name] = prior_scores(cfg, prior, denoiser, pipe.clip, text, held)
    return out


def use_prior(pipe, folder: Path, candidates: int) -> None:
    """Put another prior (trained on the same CLIP) into a loaded unCLIP pipeline."""
    sampling = {**read_card(folder)["sampling"], "candidates": candidates}
    pipe.use_prior(load_component(folder), sampling)


@torch.no_grad()
def diversity(pipe, prompts: list[str], per_prompt: int, clip) -> dict:
    """Mean over prompts of the mean pairwise distance between its images: 1 - cosine of the
    evaluation CLIP's image embeddings, and pixel RMS."""
    feats, pixels = [], []
    for prompt in prompts:
        images = pipe.generate(pipe.params(prompt, seed=0), per_prompt)
        emb = F.normalize(clip.encode_image(to_input(clip, images)), dim=-1)
        cos = emb @ emb.t()
        off = ~torch.eye(per_prompt, dtype=torch.bool)
        feats.append((1 - cos[off]).mean().item())
        flat = images.flatten(1)
        pixels.append((torch.cdist(flat, flat)[off] / flat.shape[1] ** 0.5).mean().item())
    return {
        "clip_distance": round(sum(feats) / len(feats), 4),
        "pixel_rms": round(sum(pixels) / len(pixels), 4),
        "prompts": len(prompts),
        "per_prompt": per_prompt,
    }


@torch.no_grad()
def variation_figures(pipe, data: str, n: int, k: int, clip) -> dict:
    """Variations of n held-out real images (k each, no text): the evaluation CLIP's cosine of
    each variation to its own image and to the other n - 1 images, and how often its own image
    is the nearest of the n."""
    rows = load_rows(data, "heldout")[:n]
    images = load_images(data, rows)
    real = F.normalize(clip.encode_image(to_input(clip, images)), dim=-1)
    own, others, top1 = [], [], []
    for i, image in enumerate(images):
        drawn = pipe.variations(image[None], n=k, seed=0)
        emb = F.normalize(clip.encode_image(to_input(clip, drawn)), dim=-1)
        cos = emb @ real.t()  # (k, n)
        own.append(cos[:, i].mean().item())
        others.append(((cos.sum(1) - cos[:, i]) / (n - 1)).mean().item())
        top1.append((cos.argmax(1) == i).float().mean().item())
    return {
        "images": n,
        "per_image": k,
        "cosine_to_own_image": round(sum(own) / n, 4),
        "cosine_to_other_images": round(sum(others) / n, 4),
        "own_image_nearest": round(sum(top1) / n, 4),
    }


def eval_figures(name: str, pipe, model, args, prompts, clip) -> dict:
    cfg = EvalConfig(data=args.data, n=args.n, seed=0, batch_size=32, grid=0)
    t = time.perf_counter()
    report = evaluate(model, cfg, pipeline=pipe)
    seconds = time.perf_counter() - t
    metrics = {
        k: {"value": m["value"], "real": m.get("real")} for k, m in report["metrics"].items()
    }
    row = {
        "model": str(model),
        "sampler": report["sampler"],
        "steps": report["steps"],
        "guidance": report["guidance"],
        "guidance_interval": report["guidance_interval"],
        "nfe": report["nfe"],
        "metrics": metrics,
        "seconds_per_image": round(seconds / args.n, 3),
        "diversity": diversity(pipe, prompts, args.per_prompt, clip),
    }
    print(name, json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unclip", required=True)
    ap.add_argument("--direct", required=True, help="the text-to-image model on the same data")
    ap.add_argument("--data", required=True)
    ap.add_argument("--prior", action="append", default=[], help="NAME=FOLDER")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=20, help="held-out captions for diversity")
    ap.add_argument("--per-prompt", type=int, default=8)
    ap.add_argument("--variations", type=int, default=0, help="held-out images to vary (0: none)")
    ap.add_argument("--variations-only", action="store_true", help="add them to --out alone")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    priors = dict(p.split("=", 1) for p in args.prior)
    clip = load_emoji_clip()  # the evaluation CLIP, for diversity
    prompts = [r["text"] for r in load_rows(args.data, "heldout")[: args.prompts]]
    pipe = t2i.load(args.unclip)
    if args.variations_only:
        out = json.loads(Path(args.out).read_text())
        out["variations"] = variation_figures(pipe, args.data, args.variations, 2, clip)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print("variations", json.dumps(out["variations"]))
        return
    out = {"priors": prior_figures(pipe, {k: Path(v) for k, v in priors.items()}, args.data)}
    print("priors", json.dumps(out["priors"]), flush=True)
    rows = {
        "direct": eval_figures("direct", t2i.load(args.direct), args.direct, args, prompts, clip)
    }
    for name, folder in priors.items():
        for candidates in (1, 2) if name == "diffusion" else (1,):
            use_prior(pipe, Path(folder), candidates)
            label = f"unclip_{name}_best_of_{candidates}"
            rows[label] = eval_figures(label, pipe, args.unclip, args, prompts, clip)
    out["models"] = rows
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
