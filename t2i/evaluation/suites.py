"""The metric suites of `t2i eval`, chosen by the data: each turns a generation function into
{metric: {value, real, ...}} beside the same figure for real images (its floor).

    shapes          exact-judge compositional accuracy (overall, per category) on the fixed prompt
                    set `shapes_eval_prompts` and on held-out colour-shape combinations
    fashion         prompt accuracy (shipped classifier) + fd_fashion / kid_fashion vs test images
    a folder        emoji CLIP score, CLIP R-precision and fd_emoji_clip vs its "heldout" split
An autoencoder model folder gets reconstruction PSNR, SSIM and the FD of reconstructions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2i.checkpoint import load_component
from t2i.data import load_dataset
from t2i.data.fashion import FashionMNIST
from t2i.data.judge import MIN_SIZE, judge
from t2i.data.shapes import (
    ShapesConfig,
    Spec,
    heldout_prompts,
    parse_caption,
    render_scene,
    sample_scene,
    scene_rng,
    shapes_eval_prompts,
)
from t2i.data.shapes_phrasing import paraphrase_prompts
from t2i.evaluation.classifier import load_classifier
from t2i.evaluation.emoji_clip import load_emoji_clip, pooled_text, to_input
from t2i.evaluation.features import extract_features
from t2i.evaluation.metrics import (
    clip_score,
    compositional_accuracy,
    frechet_distance,
    kid,
    prompt_accuracy,
    psnr,
    r_precision,
    ssim,
)
from t2i.models.text_encoder import PretrainedTextEncoder
from t2i.samplers import get_sampler

MAX_N = 100_000
GRID_MAX = 64

DEFINITIONS = {
    "compositional_accuracy": "share of images whose every stated fact (count, colour, shape, "
    "size, position, binding, background) holds under the exact shapes judge; per category: "
    "share of images stating it with all its facts right (GenEval-style)",
    "prompt_accuracy": "share of images the shipped Fashion-MNIST classifier assigns to the "
    "prompted class",
    "fd_fashion": "Frechet distance between Gaussians fitted to the 128-d penultimate features of "
    "the shipped Fashion-MNIST classifier, generated vs n real test images (FID-style)",
    "kid_fashion": "KID x1e3: unbiased MMD^2, cubic polynomial kernel on the same features, mean "
    "over 50 subsets of min(n/2, 1000)",
    "clip_score_emoji": "100 * max(cos, 0) between the emoji CLIP image embedding and its prompt's "
    "embedding, mean over images",
    "r_precision_emoji": "share of images whose own prompt is the closest of min(100, n) prompts "
    "(own + random others, identical captions excluded) under the emoji CLIP",
    "fd_emoji_clip": "Frechet distance on emoji CLIP image embeddings, generated (or "
    "reconstructed) vs n real held-out images",
    "psnr": "10 log10(2^2 / MSE) per image in [-1, 1], mean over n real test images reconstructed",
    "ssim": "SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of the reconstructions",
}


@dataclass
class EvalConfig:
    data: str = "shapes"  # shapes, fashion, or an image folder with a "heldout" split
    n: int = 1000  # generated images (shapes: per prompt set)
    sampler: str | None = None  # None: the model's default
    steps: int | None = None
    guidance: float | None = None
    guidance_interval: tuple[float, float] | str | None = None  # None: the model's; "all"
    cads_noise: float | None = None  # condition-annealed sampling; None: the model's
    cads_interval: tuple[float, float] | None = None
    seed: int = 0  # image i uses seed + i
    batch_size: int = 32  # images per sampler call (part of what fixes the numbers)
    heldout: bool = True  # shapes: also the held-out combinations prompt set
    paraphrases: bool = False  # shapes: also prompts in phrasings held out of training
    grid: int = 64  # images in grid.png (16..64; 0: no grid)
    progress: bool = False  # a tqdm bar over generation batches
    guides: tuple[tuple[str, str, float], ...] = ()  # (kind, folder, scale): t2i/guides


def suite_for(data: str) -> str:
    """The metric suite a --data value selects: 'shapes', 'fashion' or 'folder'."""
    name = data.partition(":")[0]
    if name in ("shapes", "fashion"):
        return name
    if Path(data).is_dir():
        return "folder"
    raise ValueError(
        f"unknown data {data!r} for evaluation; choose from ['fashion', 'shapes'] or an image "
        "folder (metadata.jsonl with a 'heldout' split)"
    )


def check_config(cfg: EvalConfig) -> None:
    suite_for(cfg.data)
    for name, value, low, high in (
        ("n", cfg.n, 1, MAX_N),
        ("batch_size", cfg.batch_size, 1, 64),
        ("seed", cfg.seed, 0, 2**62),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if cfg.sampler is not None:
        get_sampler(cfg.sampler)
    if not (cfg.grid == 0 or 1 <= cfg.grid <= GRID_MAX):
        raise ValueError(f"grid must be 0 or in [1, {GRID_MAX}], got {cfg.grid}")


# ---------------------------------------------------------------- metric helpers


def _metric(value, real=None, **extra) -> dict:
    """One report entry: value, the same figure for real images (None when not defined)."""
    entry = {"value": _round(value), "real": _round(real)}
    entry.update({k: _round(v) for k, v in extra.items()})
    return entry


def _round(v):
    if isinstance(v, float):
        return float(f"{v:.6g}")
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


def _fd_kid(gen: np.ndarray, real: np.ndarray, floor: np.ndarray) -> tuple[float, ...]:
    """FD and KID x1e3 of gen vs real, and of the real floor set vs real."""
    size = max(2, min(1000, len(real) // 2))
    k_gen = kid(gen, real, subsets=50, subset_size=size)[0] * 1e3
    k_floor = kid(floor, real, subsets=50, subset_size=size)[0] * 1e3
    return frechet_distance(gen, real), frechet_distance(floor, real), k_gen, k_floor


def _pick(n_total: int, n: int, seed: int) -> np.ndarray:
    if n > n_total:
        raise ValueError(f"n = {n} exceeds the {n_total} real images available")
    return np.random.default_rng(seed).permutation(n_total)[:n]


# ---------------------------------------------------------------- suites
# Each suite: (cfg, gen(prompts) -> images, image size) -> (metrics, extractor, prompts, images)

GenFn = Callable[[list[str]], torch.Tensor]


def _shapes_suite(
    cfg: EvalConfig, gen: GenFn, image_size: int
) -> tuple[dict, str, list, torch.Tensor]:
    if image_size < MIN_SIZE:
        raise ValueError(
            f"the shapes judge needs images >= {MIN_SIZE} px; this model makes {image_size}"
        )
    sets = {"fixed": _grammar_set(shapes_eval_prompts(cfg.n))}
    if cfg.heldout:
        sets["heldout"] = _grammar_set(heldout_prompts(cfg.n))
    if cfg.paraphrases:
        for name, phrasing in PARAPHRASE_SETS.items():
            sets[name] = [(p.text, p.spec) for p in paraphrase_prompts(cfg.n, phrasing=phrasing)]
    metrics, first = {}, None
    for name, items in sets.items():
        prompts, specs = [p for p, _ in items], [s for _, s in items]
        images = gen(prompts)
        first = images if first is None else first
        acc = compositional_accuracy([judge(img, s) for img, s in zip(images, specs)])
        real = compositional_accuracy(
            [judge(im, s) for im, s in zip(_renders(name, cfg.n, image_size), specs)]
        )
        cats = [k for k in acc if f"n_{k}" in acc]
        metrics[f"compositional_accuracy_{name}"] = _metric(
            acc["overall"],
            real["overall"],
            per_category={k: acc[k] for k in cats},
            per_category_real={k: real[k] for k in cats},
            images_stating={k: acc[f"n_{k}"] for k in cats},
        )
    return metrics, "shapes judge (exact, t2i.data.judge)", [p for p, _ in sets["fixed"]], first


# new sentences around known phrases; held-out frames at every level (word orders too)
PARAPHRASE_SETS = {"paraphrase": "heldout_sentences", "paraphrase_every_level": "heldout"}


def _grammar_set(prompts: list[str]) -> list[tuple[str, Spec]]:
    return [(p, parse_caption(p)) for p in prompts]


def _renders(name: str, n: int, size: int) -> list[Image.Image]:
    """The real scenes behind each prompt set, rendered: the judge's floor."""
    if name in PARAPHRASE_SETS:
        return [
            render_scene(p.scene, size)
            for p in paraphrase_prompts(n, phrasing=PARAPHRASE_SETS[name])
        ]
    split, seed = ("test" if name == "fixed" else "holdout"), 1234
    config = ShapesConfig(seed=seed)
    return [
        render_scene(sample_scene(scene_rng(seed, split, i), config, split), size) for i in range(n)
    ]


def _fashion_reals(cfg: EvalConfig):
    test = FashionMNIST("test", image_size=32, seed=cfg.seed)
    idx = _pick(len(test), cfg.n, cfg.seed)
    items = [test[int(i)] for i in idx]
    train = FashionMNIST("train", image_size=32, seed=cfg.seed)
    floor = torch.stack([train[int(i)]["image"] for i in _pick(len(train), cfg.n, cfg.seed + 1)])
    return items, floor


def _fashion_suite(
    cfg: EvalConfig, gen: GenFn, image_size: int
) -> tuple[dict, str, list, torch.Tensor]:
    if image_size != 32:
        raise ValueError(
            f"fashion evaluation needs 32 px images (the classifier's input), got {image_size}"
        )
    items, floor = _fashion_reals(cfg)
    prompts = [it["caption"] for it in items]
    labels = torch.tensor([it["label"] for it in items])
    real = torch.stack([it["image"] for it in items])
    images = gen(prompts)
    if images.shape[1] != 1:
        raise ValueError(
            f"fashion evaluation needs 1-channel images, the model makes {images.shape[1]}"
        )
    clf = load_classifier()
    with torch.no_grad():
        acc, acc_real = prompt_accuracy(clf(images), labels), prompt_accuracy(clf(real), labels)
    f_gen, f_real, f_floor = (extract_features(clf, x) for x in (images, real, floor))
    fd, fd_floor, k, k_floor = _fd_kid(f_gen, f_real, f_floor)
    metrics = {
        "prompt_accuracy": _metric(acc, acc_real),
        "fd_fashion": _metric(fd, fd_floor),
        "kid_fashion": _metric(k, k_floor),
    }
    return metrics, "fashion_classifier (shipped, t2i/evaluation/extractors)", prompts, images


def _folder_reals(cfg: EvalConfig, image_size: int):
    held = load_dataset(cfg.data, split="heldout", image_size=image_size)
    items = [held[int(i)] for i in _pick(len(held), cfg.n, cfg.seed)]
    train = load_dataset(cfg.data, split="train", image_size=image_size)
    floor = torch.stack([train[int(i)]["image"] for i in _pick(len(train), cfg.n, cfg.seed + 1)])
    return items, floor


EMOJI_CLIP_DATA = "the emoji of `t2i data emoji` (64 px, drawn on white)"
MIN_WHITE_BORDER = 0.9  # emoji: 0.996 of border pixels white; 200 letters 0.53, shapes 0.35


def white_border_share(images: torch.Tensor) -> float:
    """Share of the images' border pixels that are near white (every channel >= 230 of 255)."""
    x = (images.float().clamp(-1, 1) + 1) * 127.5  # (B, C, H, W)
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    return float((border >= 230).all(dim=1).float().mean())


def folder_reals(cfg: EvalConfig, count: int = 64) -> torch.Tensor:
    """Up to `count` of the folder's reference images at 64 px (for folder_notes)."""
    held = load_dataset(cfg.data, split="heldout", image_size=64)
    picked = _pick(len(held), min(count, len(held)), cfg.seed)
    return torch.stack([held[int(i)]["image"] for i in picked])


def folder_notes(data: str, real: torch.Tensor | None = None) -> dict:
    """What a folder's figures can be trusted for: {"reference": what the real images are,
    "warnings": [...]} -- whether the folder has a held-out split, and whether its images look
    like what the feature extractor was trained on."""
    from t2i.data.folder import scan_folder

    everything, held = scan_folder(data), scan_folder(data, split="heldout")
    warnings = []
    if len(held) == len(everything):
        reference = (
            f"all {len(everything)} images of the folder: it has no held-out split (no 'split' "
            "field in metadata.jsonl)"
        )
        warnings.append(
            "no held-out split: the real-image figures compare the folder with itself, so they "
            "say how close the model comes to images it may have trained on, not how well it "
            'generalises; give metadata.jsonl rows "split": "heldout" for images kept out '
            "of training"
        )
    else:
        reference = f"the {len(held)} held-out images of {len(everything)} (split 'heldout')"
    if real is not None and (share := white_border_share(real)) < MIN_WHITE_BORDER:
        warnings.append(
            f"the feature extractor (emoji_clip) was trained on {EMOJI_CLIP_DATA}; only "
            f"{share:.0%} of these images' border pixels are white, so its features may not "
            "describe them: compare models on this folder with each other only, or train an "
            "extractor on it (t2i train emoji_clip --data FOLDER)"
        )
    return {"reference": reference, "warnings": warnings}


def _clip_features(images: torch.Tensor) -> np.ndarray:
    clip = _cached("emoji_clip", load_emoji_clip)
    with torch.no_grad():
        parts = [
            clip.encode_image(to_input(clip, images[i : i + 256]))
            for i in range(0, len(images), 256)
        ]
    return torch.cat(parts).double().numpy()


def _folder_suite(
    cfg: EvalConfig, gen: GenFn, image_size: int
) -> tuple[dict, str, list, torch.Tensor]:
    if cfg.n < 2:
        raise ValueError(f"folder evaluation needs n >= 2 (FD, R-precision), got {cfg.n}")
    items, floor = _folder_reals(cfg, image_size)
    prompts = [it["caption"] for it in items]
    real = torch.stack([it["image"] for it in items])
    images = gen(prompts)
    clip = _cached("emoji_clip", load_emoji_clip)
    encoder = _cached("minilm", PretrainedTextEncoder)
    with torch.no_grad():
        pooled = torch.cat(
            [encoder.encode(prompts[i : i + 256]).pooled for i in range(0, len(prompts), 256)]
        )
        text = clip.encode_text(pooled_text(pooled))
    f_gen, f_real, f_floor = (_clip_features(x) for x in (images, real, floor))
    groups = np.unique(prompts, return_inverse=True)[1]
    pool = min(100, len(set(prompts)))

    def rp(feats):
        return r_precision(feats, text, pool=pool, seed=cfg.seed, groups=groups)

    fd, fd_floor = frechet_distance(f_gen, f_real), frechet_distance(f_floor, f_real)
    metrics = {
        "clip_score_emoji": _metric(clip_score(f_gen, text), clip_score(f_real, text)),
        "r_precision_emoji": _metric(rp(f_gen), rp(f_real), pool=pool),
        "fd_emoji_clip": _metric(fd, fd_floor),
    }
    extractor = f"emoji_clip (shipped, t2i/evaluation/extractors), trained on {EMOJI_CLIP_DATA}"
    return metrics, extractor, prompts, images


_CACHE: dict[str, object] = {}


def _cached(key: str, build: Callable):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


SUITES = {"shapes": _shapes_suite, "fashion": _fashion_suite, "folder": _folder_suite}
HEADLINE = {  # the one number a sweep plots, and whether lower is better
    "shapes": ("compositional_accuracy_fixed", False),
    "fashion": ("fd_fashion", True),
    "folder": ("fd_emoji_clip", True),
}


# ---------------------------------------------------------------- autoencoder


def _real_test_images(cfg: EvalConfig) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """(n real test images, n other real images for the FD floor or None, their captions) for
    reconstruction."""
    suite = suite_for(cfg.data)
    if suite == "fashion":
        items, floor = _fashion_reals(cfg)
    elif suite == "folder":
        items, floor = _folder_reals(cfg, 64)
    else:
        ds = load_dataset(cfg.data, split="test", length=cfg.n, seed=cfg.seed)
        items, floor = [ds[i] for i in range(cfg.n)], None
    return torch.stack([it["image"] for it in items]), floor, [it["caption"] for it in items]


@torch.no_grad()
def autoencoder_eval(folder: Path, cfg: EvalConfig) -> tuple[dict, str, list, torch.Tensor]:
    ae = load_component(folder / "autoencoder")
    real, floor, captions = _real_test_images(cfg)
    recon = torch.cat(
        [
            ae.from_latent(ae.to_latent(real[i : i + cfg.batch_size]))  # KL: posterior mode
            for i in range(0, len(real), cfg.batch_size)
        ]
    ).clamp(-1, 1)
    metrics = {"psnr": _metric(psnr(recon, real)), "ssim": _metric(ssim(recon, real))}
    extractor = "none (no feature extractor for this data)"
    if suite_for(cfg.data) == "shapes":  # the judge: does a reconstruction keep every fact?
        acc, floor_acc = (
            compositional_accuracy([judge(x, c) for x, c in zip(images, captions)])["overall"]
            for images in (recon, real)
        )
        metrics["compositional_accuracy_reconstruction"] = _metric(acc, floor_acc)
        extractor = "shapes judge (exact, t2i.data.judge)"
    if floor is not None and cfg.n >= 2:
        if suite_for(cfg.data) == "fashion":
            clf = load_classifier()
            feats = [extract_features(clf, x) for x in (recon, real, floor)]
            name, extractor = "fd_fashion", "fashion_classifier (shipped)"
        else:
            feats = [_clip_features(x) for x in (recon, real, floor)]
            name, extractor = "fd_emoji_clip", f"emoji_clip (shipped), trained on {EMOJI_CLIP_DATA}"
        metrics[name] = _metric(
            frechet_distance(feats[0], feats[1]), frechet_distance(feats[2], feats[1])
        )
    k = min(GRID_MAX // 2, len(real))  # grid: real and reconstruction side by side
    pairs = torch.stack([real[:k], recon[:k]], 1).flatten(0, 1)
    captions = [f"{kind} {i}" for i in range(k) for kind in ("real", "reconstruction")]
    return metrics, extractor, captions, pairs
