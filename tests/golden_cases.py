"""Fixed generation cases whose images must not change when the code around the core is moved:
every sampler, classifier-free guidance with a negative prompt and an interval, prompt weights,
batches, img2img, inpainting (with RePaint passes), bf16, on the three shipped models, and a
cascade and an autoregressive model folder written here from seeded weights.

Each case is recorded as its images (tests/golden/<case>-<i>.png) and their generation
parameters (tests/golden/params.json, temporary paths reduced to file names). A run matches a
record when the parameters are equal and the pixels are equal up to float rounding across
machines: at most one level of 255, in at most PIXEL_SHARE of the values. The same code on two
machines (other CPUs and library builds) moves one level in 0.003-0.006% of the values of the
README's `shapes` and `emoji` grids; a change of behaviour moves most pixels by many levels.
`python3 tests/golden_cases.py --write` records the cases anew (only when a change is meant to
alter images).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import write_tiny_autoregressive_model, write_tiny_model  # noqa: E402

import t2i  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
PARAMS = GOLDEN / "params.json"
PIXEL_SHARE = 1e-3  # the share of pixel values that may be one level off (float rounding)
SAMPLERS = [
    "ddim",
    "ddpm",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "euler",
    "euler_ancestral",
    "heun",
    "lcm",
]


def write_tiny_cascade(folder: Path) -> Path:
    """An upscaler (16 px from 8 px, the small image on 3 cond channels) with its base inside."""
    write_tiny_model(folder / "base", image_size=8, guidance=1.5)
    torch.manual_seed(1)
    from tiny_models import VOCAB

    from t2i.checkpoint import save_model_folder
    from t2i.models.text_encoder import TextTransformer, TextTransformerConfig
    from t2i.models.unet import UNet, UNetConfig
    from t2i.schedules import DiscreteSchedule

    components = {
        "unet": UNet(UNetConfig.preset("tiny", cond_channels=3)),
        "text_encoder": TextTransformer(TextTransformerConfig.preset("tiny", vocab=VOCAB)),
    }
    index = {
        "parameterisation": "v",
        "schedule": DiscreteSchedule.preset("ddpm").to_dict(),
        "sampler": {"name": "ddim", "steps": 3, "guidance_scale": 2.0},
        "image_size": 16,
        "low_res": 8,
        "base": "base",
    }
    save_model_folder(folder, components, index)
    return folder


def write_pattern(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    """A fixed, smooth test image (no randomness: the same bytes on every machine)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127.5 + 127.5 * np.sin(xx / w * 6.3)
    g = 255.0 * yy / max(h - 1, 1)
    b = 255.0 * ((xx + yy) % 16 < 8)
    a = np.stack([r, g, b], -1).round().astype(np.uint8)
    img = Image.fromarray(a).convert(mode)
    img.save(path)
    return path


def write_mask(path: Path, size: tuple[int, int]) -> Path:
    """White (repaint) on the right half, black (keep) on the left."""
    w, h = size
    a = np.zeros((h, w), np.uint8)
    a[:, w // 2 :] = 255
    Image.fromarray(a).save(path)
    return path


def cases(tmp: Path) -> dict:
    """name -> a function that returns the case's PIL images (each with info["t2i"])."""
    tmp.mkdir(parents=True, exist_ok=True)
    cascade = write_tiny_cascade(tmp / "cascade")
    tokens = write_tiny_autoregressive_model(tmp / "autoregressive")
    fashion_init = write_pattern(tmp / "fashion_init.png", (32, 32), "L")
    fashion_mask = write_mask(tmp / "fashion_mask.png", (32, 32))
    big_init = write_pattern(tmp / "init64.png", (64, 64))
    big_mask = write_mask(tmp / "mask64.png", (64, 64))
    small_init = write_pattern(tmp / "init16.png", (16, 16))
    small_mask = write_mask(tmp / "mask16.png", (16, 16))
    shapes_prompt = "a red circle above a blue square"
    out = {}
    for i, name in enumerate(SAMPLERS):
        out[f"shapes_{name}"] = ("shapes", shapes_prompt, dict(sampler=name, steps=4, seed=10 + i))
    out.update(
        {
            "shapes_defaults": (
                "shapes",
                "a small green star to the left of a large red heart",
                {},
            ),
            "shapes_batch_of_two": ("shapes", "a yellow triangle", dict(steps=5, seed=7, n=2)),
            "shapes_weighted_prompt": ("shapes", "a (purple:1.4) heart", dict(steps=5)),
            "shapes_img2img": (
                "shapes",
                "a red circle",
                dict(steps=6, init=big_init, strength=0.6, seed=3),
            ),
            "fashion_cfg_negative_interval": (
                "fashion",
                "a photo of a sneaker",
                dict(steps=6, negative="a dress", guidance=4.0, guidance_interval=(0.5, 5.0)),
            ),
            "fashion_guidance_one": ("fashion", "an ankle boot", dict(steps=5, guidance=1.0)),
            "fashion_cads_batch_of_two": (
                "fashion",
                "a dress",
                dict(steps=6, seed=5, n=2, cads_noise=0.5, cads_interval=(1.0, 20.0)),
            ),
            "fashion_img2img": (
                "fashion",
                "a bag",
                dict(steps=8, init=fashion_init, strength=0.5, seed=2),
            ),
            "fashion_inpaint_resample": (
                "fashion",
                "a shirt",
                dict(steps=10, init=fashion_init, mask=fashion_mask, resample=2, seed=4),
            ),
            "emoji_defaults_short": ("emoji", "red heart emoji, openmoji style", dict(steps=6)),
            "emoji_negative_all_steps": (
                "emoji",
                "grinning face emoji, twemoji style",
                dict(steps=5, negative="sad", guidance_interval="all", sampler="dpmpp_2m"),
            ),
            "emoji_img2img": (
                "emoji",
                "a blue star emoji",
                dict(steps=6, init=big_init, strength=0.7),
            ),
            "emoji_inpaint": (
                "emoji",
                "a green apple emoji",
                dict(steps=6, init=big_init, mask=big_mask, seed=5),
            ),
            "emoji_bf16": ("emoji", "thumbs up emoji", dict(steps=4, bf16=True, seed=9)),
            "cascade_plain": (cascade, "a red circle", dict(steps=3, seed=1, n=2)),
            "cascade_img2img": (
                cascade,
                "a blue square",
                dict(steps=4, init=small_init, strength=0.5),
            ),
            "cascade_inpaint": (
                cascade,
                "a green star",
                dict(steps=3, init=small_init, mask=small_mask, sampler="euler_ancestral"),
            ),
            "autoregressive_plain": (tokens, "a red circle", dict(seed=3, n=2)),
            "autoregressive_negative": (
                tokens,
                "a blue square",
                dict(negative="red", guidance=3.0),
            ),
            "autoregressive_no_guidance": (tokens, "a green star", dict(guidance=1.0, seed=8)),
        }
    )
    return out


_PIPES: dict = {}


def run_case(model, prompt: str, kw: dict) -> list[Image.Image]:
    kw = dict(kw)
    bf16 = kw.pop("bf16", False)
    key = (str(model), bf16)
    if key not in _PIPES:
        _PIPES[key] = t2i.load(model, bf16=bf16)
    return _PIPES[key](prompt, **kw)


def run_items_case(model, items: list[tuple[str, int]], steps: int) -> list[Image.Image]:
    """The server's path: one sampler call over items with their own prompts and seeds."""
    from dataclasses import replace

    from t2i.images import to_pil

    pipe = _PIPES.setdefault((str(model), False), t2i.load(model))
    first = pipe.params(items[0][0], steps=steps)
    params = [replace(first, prompt=p, seed=s) for p, s in items]
    return to_pil(pipe.generate_items(params))


def parameters(img: Image.Image) -> dict:
    """The image's generation parameters, temporary paths reduced to file names."""
    params = json.loads(img.info["t2i"]) if "t2i" in img.info else {}
    for key in ("model", "init", "mask"):
        if params.get(key):
            params[key] = Path(params[key]).name
    return params


def all_cases(tmp: Path) -> dict[str, list[Image.Image]]:
    torch.set_num_threads(1)  # the thread count the suite runs with (tests/conftest.py)
    out = {name: run_case(*case) for name, case in cases(tmp).items()}
    items = [("a red circle", 1), ("a blue star below a green heart", 2), ("a grey square", 3)]
    out["shapes_items_mixed_prompts"] = run_items_case("shapes", items, steps=4)
    out["fashion_items_mixed_prompts"] = run_items_case(
        "fashion", [("a sneaker", 0), ("a coat", 5)], steps=4
    )
    return out


def recorded_cases() -> dict[str, dict]:
    """case -> {"params": [...], "images": [paths]} as recorded."""
    params = json.loads(PARAMS.read_text())
    return {
        case: {"params": p, "images": [GOLDEN / f"{case}-{i}.png" for i in range(len(p))]}
        for case, p in params.items()
    }


def mismatch(images: list[Image.Image], record: dict) -> str | None:
    """Why the images do not match the record, or None when they do (see the module's note)."""
    if len(images) != len(record["params"]):
        return f"{len(images)} images, recorded {len(record['params'])}"
    for i, (img, params, path) in enumerate(zip(images, record["params"], record["images"])):
        if parameters(img) != params:
            return f"image {i}: parameters {parameters(img)} against {params}"
        with Image.open(path) as ref:
            ref.load()
            if (img.mode, img.size) != (ref.mode, ref.size):
                return f"image {i}: {img.mode} {img.size} against {ref.mode} {ref.size}"
            diff = np.abs(np.asarray(img, np.int16) - np.asarray(ref, np.int16))
        share = float((diff > 0).mean())
        if diff.max() > 1 or share > PIXEL_SHARE:
            return f"image {i}: pixels differ by up to {diff.max()} in {share:.2%} of values"
    return None


def write(found: dict[str, list[Image.Image]]) -> None:
    GOLDEN.mkdir(exist_ok=True)
    for old in GOLDEN.glob("*.png"):
        old.unlink()
    for case, images in found.items():
        for i, img in enumerate(images):
            img.save(GOLDEN / f"{case}-{i}.png")
    params = {case: [parameters(img) for img in images] for case, images in found.items()}
    PARAMS.write_text(json.dumps(params, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        found = all_cases(Path(d))
    if "--write" in sys.argv:
        write(found)
        print(f"wrote {len(found)} cases to {GOLDEN}", file=sys.stderr)
    else:
        recorded = recorded_cases()
        for case, images in sorted(found.items()):
            why = mismatch(images, recorded[case]) if case in recorded else "not recorded"
            print(f"{case}: {why or 'matches'}")
