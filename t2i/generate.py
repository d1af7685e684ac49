"""`t2i generate`: a prompt (or a t2i PNG's own parameters) -> PNGs that reproduce themselves."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from t2i import DEFAULT_MODEL
from t2i.families import load
from t2i.images import image_grid, to_pil
from t2i.params import MAX_IMAGES, GenerationParams, check_seeds, read_png_request, save_png


def output_paths(out: str | Path, seeds: list[int]) -> list[Path]:
    """One path per image: `out` itself for one image, `stem-<seed>.png` for several."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a folder; name a .png file: {out / 't2i.png'}")
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {str(out)!r}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"cannot write {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write {out}: folder {parent} is not writable")
    paths = (
        [out.with_name(f"{out.stem}-{s}{out.suffix}") for s in seeds] if len(seeds) > 1 else [out]
    )
    for path in paths:
        if path.is_dir():
            raise ValueError(f"cannot write {path}: a folder of that name is there")
    return paths


def request_from_args(args: argparse.Namespace) -> tuple[str, dict]:
    """(model, keyword arguments of Pipeline.params) from the flags, or from a PNG's parameters.

    With --from, the PNG's values are the base and any flag given explicitly replaces one.
    """
    flags = {
        "negative": args.negative,
        "sampler": args.sampler,
        "steps": args.steps,
        "guidance": args.guidance,
        "seed": args.seed,
        "size": args.size,
        # editing flags (absent from callers that build their own Namespace)
        "init": getattr(args, "init", None),
        "mask": getattr(args, "mask", None),
        "strength": getattr(args, "strength", None),
        "resample": getattr(args, "resample", None),
        "mask_blur": getattr(args, "mask_blur", None),
        "guidance_interval": getattr(args, "guidance_interval", None),
        "image_prompt": getattr(args, "image_prompt", None),
        "cads_noise": getattr(args, "cads_noise", None),
        "cads_interval": getattr(args, "cads_interval", None),
    }
    if args.from_png:
        kw = read_png_request(args.from_png)
        recorded = kw.pop("model", "")
        model = args.model or recorded or DEFAULT_MODEL
        prompt = args.prompt if args.prompt is not None else kw.pop("prompt")
        kw.pop("prompt", None)
        kw.update({k: v for k, v in flags.items() if v is not None})
        return model, {"prompt": prompt, **kw}
    if not args.prompt and not flags["image_prompt"]:
        raise ValueError('give a prompt (t2i generate "a red circle") or --from image.png')
    return args.model or DEFAULT_MODEL, {"prompt": args.prompt or "", **flags}


def add_loras(pipe, kw: dict, args: argparse.Namespace) -> None:
    """--lora-dir for <lora:name:scale> in the prompt; each --embedding word added; each --lora
    FILE[:SCALE] (or NAME[:SCALE] from the LoRA folder) loaded and applied (over a `--from`
    image's own entry of that name)."""
    if getattr(args, "lora_dir", None):
        if not Path(args.lora_dir).is_dir():
            raise ValueError(f"--lora-dir {args.lora_dir!r} is not a folder")
        pipe.loras.folder = Path(args.lora_dir)
    for path in getattr(args, "embedding", None) or []:
        if Path(path).is_dir():  # a folder of them: those learnt on this model
            pipe.load_embeddings(path)
        else:
            pipe.load_embedding(path)
    for spec in getattr(args, "lora", None) or []:
        path, scale = lora_flag(spec)
        # a bare name is one of the model's own LoRAs (its loras/ folder, or --lora-dir)
        is_name = not path.endswith(".safetensors") and "/" not in path and not Path(path).exists()
        name = path if is_name else pipe.load_lora(path)
        kw["loras"] = [e for e in kw.get("loras") or () if e[0] != name] + [(name, scale)]


def lora_flag(spec: str) -> tuple[str, float]:
    """FILE[:SCALE] -> (FILE, SCALE), scale 1 when left out."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and not tail.endswith(".safetensors"):
        try:
            return head, float(tail)
        except ValueError:
            raise ValueError(f"--lora {spec!r}: scale {tail!r} is not a number") from None
    return spec, 1.0


def add_guides(pipe, kw: dict, args: argparse.Namespace) -> None:
    """Each --guide KIND:DIR[:SCALE] loaded and applied; with `--from`, a guide the image names
    keeps its recorded scale unless the flag gives one."""
    for spec in getattr(args, "guide", None) or []:
        kind, path, scale = guide_flag(spec)
        name = pipe.load_guide(path, kind=kind)
        recorded = {e[0]: e for e in kw.get("guides") or ()}
        entry = recorded.get(name) if scale is None else None
        entry = entry or (name, 1.0 if scale is None else scale)
        kw["guides"] = [e for e in kw.get("guides") or () if e[0] != name] + [entry]


def guide_flag(spec: str) -> tuple[str, str, float | None]:
    """KIND:DIR[:SCALE] -> (KIND, DIR, SCALE), scale None when left out."""
    kind, sep, rest = spec.partition(":")
    if kind not in ("classifier", "clip") or not sep or not rest:
        raise ValueError(
            f"--guide {spec!r}: expected KIND:DIR[:SCALE] with KIND classifier or clip "
            "(e.g. classifier:runs/g/model:2)"
        )
    head, sep, tail = rest.rpartition(":")
    if sep and head:
        try:
            return kind, head, float(tail)
        except ValueError:
            raise ValueError(f"--guide {spec!r}: scale {tail!r} is not a number") from None
    return kind, rest, None


def add_controls(pipe, kw: dict, args: argparse.Namespace) -> None:
    """Each --control-model folder loaded, each --control applied (one of the same name that
    an image's parameters name is replaced); --guess-mode."""
    for folder in getattr(args, "control_model", None) or []:
        pipe.load_control(folder)
    for spec in getattr(args, "control", None) or []:
        entry = control_flag(spec)
        kw["controls"] = [e for e in kw.get("controls") or () if e[0] != entry[0]] + [entry]
    if getattr(args, "guess_mode", None):
        kw["guess_mode"] = True


def control_flag(spec: str) -> tuple:
    """NAME:IMAGE[:SCALE[:START:END]] -> (NAME, IMAGE[, SCALE[, START, END]]); the numbers
    are read from the end, so an image path may hold ':'."""
    name, sep, rest = spec.partition(":")
    if not name or not sep or not rest:
        raise ValueError(
            f"--control {spec!r}: expected NAME:IMAGE[:SCALE[:START:END]] "
            "(e.g. edges:edges.png:0.8 or layout:map.png:1:0:0.5)"
        )
    parts = rest.split(":")
    for count in (3, 1):  # scale, start, end; or scale alone
        if len(parts) > count:
            try:
                numbers = [float(v) for v in parts[-count:]]
            except ValueError:
                continue
            return (name, ":".join(parts[:-count]), *numbers)
    return name, rest


def generate_to_files(args: argparse.Namespace) -> list[Path]:
    """Check everything, load the model, sample with a progress bar, write the PNGs."""
    if not 1 <= args.n <= MAX_IMAGES:
        raise ValueError(f"--n must be in [1, {MAX_IMAGES}], got {args.n}")
    model, kw = request_from_args(args)
    pipe = load(model, bf16=args.bf16)
    add_loras(pipe, kw, args)
    add_guides(pipe, kw, args)
    add_controls(pipe, kw, args)
    p = pipe.params(kw.pop("prompt"), **kw)
    if unknown := pipe.unknown_words(p):
        listed = ", ".join(repr(w) for w in unknown)
        print(
            f"warning: {model} cannot read {listed}: each becomes one unknown token, "
            "which it was never trained to draw",
            file=sys.stderr,
        )
    seeds = check_seeds(p, args.n, None)  # the last one too, before any file is named
    paths = output_paths(args.out, seeds)  # fail on an unwritable --out before sampling
    strip = strip_path(args.strip) if getattr(args, "strip", None) else None
    frames: list[torch.Tensor] = []
    with tqdm(total=pipe.total_steps(p), disable=args.quiet, desc="sampling", unit="step") as bar:

        def step(info: dict) -> None:
            bar.update(1)
            if strip is not None and (frame := pipe.preview(info, 0)) is not None:
                frames.append(frame.float().clamp(-1, 1))

        images = pipe.generate(p, args.n, callback=step)
    for image, seed, path in zip(to_pil(images), seeds, paths):
        save_png(image, path, GenerationParams(**{**asdict(p), "seed": seed}), pipe.model_hash)
    if strip is not None:
        write_strip(frames, strip, model)
        paths.append(strip)
    return paths


def strip_path(out: str) -> Path:
    """--strip's file, checked before sampling: a .png (a strip) or a .gif (an animation)."""
    path = Path(out)
    if path.suffix.lower() not in (".png", ".gif"):
        raise ValueError(f"--strip must name a .png or .gif file, got {out!r}")
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"--strip: cannot write {out!r} (a folder, or no writable folder)")
    return path


def write_strip(frames: list[torch.Tensor], path: Path, model: str) -> None:
    """The first image after each step, left to right (.png) or one frame each (.gif)."""
    if not frames:
        raise ValueError(f"--strip: model {model!r} gives no picture of its steps")
    stacked = torch.stack(frames)
    if path.suffix.lower() == ".png":
        image_grid(stacked, cols=len(frames)).save(path)
        return
    tiles = [t.convert("RGB") for t in to_pil(stacked)]
    tiles += [tiles[-1]] * 4  # the finished image stays a moment before the loop restarts
    tiles[0].save(path, save_all=True, append_images=tiles[1:], duration=150, loop=0)
