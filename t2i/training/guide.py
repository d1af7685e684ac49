"""`t2i train guide --init MODEL --data DATA --preset P`: a network that reads MODEL's noisy samples
(t2i/models/noisy_guide.py) for guidance (t2i/guides): a noise-aware classifier or a noisy CLIP.

    t2i train guide --init fashion --data fashion --preset fashion_classifier --out runs/g_fashion
    t2i train guide --init shapes --data shapes --preset shapes_classifier --out runs/g_shapes
    t2i train guide --init shapes --data shapes --preset shapes_clip --out runs/g_shapes_clip
    t2i train guide --init emoji --data data_cache/emoji64 --preset emoji_clip --out runs/g_emoji

Each example is encoded as the model samples (its autoencoder's latents, or pixels) and noised
at a level drawn uniformly from the model's own training sigmas, x_t = x_0 + sigma * eps, as
Dhariwal & Nichol train theirs; `clean` trains at the lowest sigma only (the clean classifier
the noise-aware one is compared with). Losses: cross-entropy on the class (fashion); per cell on
empty-or-colour-shape, on the size where there is an object, and on the background (shapes); the
symmetric InfoNCE of CLIP against the model's frozen text encoder's states (clip). The loop gives
checkpoints and exact resume; the export writes a guide folder with a card of accuracy against
sigma on held-out data.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from t2i.checkpoint import atomic_write_json, save_component
from t2i.guides.guide import CARD_NAME, load_guide
from t2i.guides.tasks import BACKGROUND_NAMES, CELL_CLASSES, SHAPES_CELL_OUTPUTS, cell_labels
from t2i.models.noisy_guide import NoisyGuide, NoisyGuideConfig, pool_text
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import first_items, open_dataset
from t2i.training.export import training_card
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick

NAME = "guide"
CARD_SIGMAS = (0.02, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 80.0)  # the card's accuracy-vs-sigma grid


@dataclass
class GuideRecipeConfig:
    net: NoisyGuideConfig = field(default_factory=NoisyGuideConfig)
    clean: bool = False  # train at the model's lowest sigma only (a clean classifier)
    card_images: int = 1000  # held-out examples the card scores
    cache_dir: str = "data_cache"  # clip on a fixed data set: its latents and text, encoded once
    loop: LoopConfig = field(default_factory=LoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def _loop(steps: int, batch: int) -> LoopConfig:
    return LoopConfig(steps=steps, batch_size=batch, log_every=50, ckpt_every=500, sample_every=0)


def _optim(steps: int, lr: float = 2e-3) -> OptimConfig:
    return OptimConfig(lr=lr, weight_decay=1e-4, warmup_steps=steps // 20, ema_decay=0.999)


def _fashion_classifier() -> GuideRecipeConfig:
    """10 classes on 32x32 grey pixels: 3 levels of 32-64-128 channels, 3,000 steps of 64."""
    net = NoisyGuideConfig(task="fashion", channels=(32, 64, 128), depth=2, outputs=10)
    return GuideRecipeConfig(net=net, loop=_loop(3000, 64), optim=_optim(3000))


def _fashion_clean() -> GuideRecipeConfig:
    return replace(_fashion_classifier(), clean=True)


def _shapes_classifier() -> GuideRecipeConfig:
    """shapes' patch latents are 768 x 3 x 3, one position per grid cell: one level of 256
    channels, 4 blocks (3x3 convolutions mix neighbouring cells), per-cell heads."""
    net = NoisyGuideConfig(
        task="shapes",
        channels=(256,),
        depth=4,
        groups=32,
        outputs=3,
        cell_outputs=SHAPES_CELL_OUTPUTS,
    )
    return GuideRecipeConfig(net=net, loop=_loop(3000, 64), optim=_optim(3000, 1e-3))


def _shapes_clip() -> GuideRecipeConfig:
    net = NoisyGuideConfig(
        task="clip", channels=(256,), depth=4, groups=32, outputs=128, text_width=1
    )
    return GuideRecipeConfig(net=net, loop=_loop(3000, 128), optim=_optim(3000, 1e-3))


def _emoji_clip() -> GuideRecipeConfig:
    """4 x 16 x 16 latents: 3 levels of 64-128-256 channels, 256-wide embeddings."""
    net = NoisyGuideConfig(
        task="clip", channels=(64, 128, 256), depth=1, groups=32, outputs=256, text_width=1
    )
    return GuideRecipeConfig(net=net, loop=_loop(3000, 128), optim=_optim(3000, 1e-3))


def _tiny() -> GuideRecipeConfig:
    """For tests: 8/16 channels, a few steps of 8, fp32, no EMA."""
    net = NoisyGuideConfig(task="fashion", channels=(8, 16), groups=8, embed_dim=16, outputs=10)
    loop = LoopConfig(steps=6, batch_size=8, log_every=2, ckpt_every=3, sample_every=0)
    optim = OptimConfig(lr=1e-3, warmup_steps=1, ema_decay=0.0)
    return GuideRecipeConfig(net=net, card_images=16, loop=loop, optim=optim)


CONFIG_PRESETS = {
    "default": _fashion_classifier,
    "fashion_classifier": _fashion_classifier,
    "fashion_clean": _fashion_clean,
    "shapes_classifier": _shapes_classifier,
    "shapes_clip": _shapes_clip,
    "emoji_clip": _emoji_clip,
    "tiny": _tiny,
}


def preset(name: str) -> GuideRecipeConfig:
    return pick(NAME, CONFIG_PRESETS, name)


# ---------------------------------------------------------------- build


def build(cfg: GuideRecipeConfig, args: argparse.Namespace) -> Recipe:
    """The model's sampling space and noise levels, the data encoded into it, a fresh network."""
    from t2i.families import load

    if not getattr(args, "init", None):
        raise ValueError("t2i train guide needs --init MODEL: the model the guide steers")
    pipe = load(args.init)
    if not pipe.supports.guides:
        raise ValueError(f"--init {args.init!r} is a {pipe.family} model; guides steer diffusion")
    dataset, _ = open_dataset(args.data, pipe.image_size, channels=pipe.image_channels)
    first = first_items(dataset, 1)[0]
    needs = {"fashion": "label", "shapes": "scene", "clip": "caption"}[cfg.net.task]
    if needs not in first:
        raise ValueError(
            f"a {cfg.net.task} guide trains on items with a {needs!r} (--data "
            f"{'fashion' if needs == 'label' else 'shapes' if needs == 'scene' else 'a folder'}),"
            f" not {args.data!r}"
        )
    channels, side = pipe.guide_space()
    cfg.net.in_channels, cfg.net.image_size = channels, side
    cfg.net.base, cfg.net.base_hash = Path(str(args.init)).name, pipe.model_hash
    cfg.net.name = cfg.net.name or Path(getattr(args, "out", None) or "guide").name
    if cfg.net.task == "clip":
        cfg.net.text_width = pipe.encode_text([""])["context"].shape[-1]
    encode = Encoder(pipe)
    cfg.net.sigma_data = encode.data_std(first_items(dataset, 256))
    if cfg.net.task == "clip" and args.data != "shapes":  # a fixed set: encode it once
        dataset = encode.cached(dataset, args.data, cfg.cache_dir, pipe.model_hash)
    cfg.net.__post_init__()
    if cfg.net.task == "shapes" and cfg.net.cells_side != 3:
        raise ValueError(f"a shapes guide needs a 3x3 grid of cells; it reads {side}x{side}")
    seed_everything(cfg.loop.seed)
    net = NoisyGuide(cfg.net)
    sigmas = pipe.denoiser.sigmas.float()
    card = {
        "command": f"t2i train guide --init {args.init} --data {args.data} --preset {args.preset}"
    }
    return guide_recipe(cfg, net, dataset, encode, sigmas, card, args)


class Encoder:
    """Images -> what the model samples (latents or pixels), and prompts -> its text states."""

    def __init__(self, pipe):
        self.pipe = pipe

    @torch.no_grad()
    def images(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipe.encode_image(images).float()

    @torch.no_grad()
    def pooled(self, captions: list[str]) -> torch.Tensor:
        text = self.pipe.encode_text(captions)
        return pool_text(text["context"], text["context_mask"])

    def data_std(self, items: list[dict]) -> float:
        return float(self.images(torch.stack([it["image"] for it in items])).std())

    def cached(self, dataset, data: str, cache_dir: str, model_hash: str) -> CachedItems:
        """Every item's latent and pooled caption states, computed once into `cache_dir`."""
        from t2i.data.cache import cached_latents, cached_text

        key = {"data": data, "image_size": self.pipe.image_size, "model": model_hash}
        latents, captions = cached_latents(dataset, self.images, key, cache_dir)
        text = cached_text(captions, lambda caps: {"pooled": self.pooled(caps)}, key, cache_dir)
        return CachedItems(latents, text["pooled"])


class CachedItems(torch.utils.data.Dataset):
    """Items {"latent", "pooled"} of a data set encoded once."""

    def __init__(self, latents: torch.Tensor, pooled: torch.Tensor):
        self.latents, self.pooled = latents, pooled

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, index: int) -> dict:
        return {"latent": self.latents[index], "pooled": self.pooled[index]}


def collate_for(task: str, encode: Encoder):
    def collate(items: list[dict]) -> dict:
        if "latent" in items[0]:
            batch = {"x0": torch.stack([it["latent"] for it in items])}
        else:
            batch = {"x0": encode.images(torch.stack([it["image"] for it in items]))}
        if task == "fashion":
            batch["label"] = torch.tensor([it["label"] for it in items])
        elif task == "shapes":
            labels = [cell_labels(it["scene"].objects) for it in items]
            batch["cells"] = torch.tensor([c for c, _ in labels])
            batch["sizes"] = torch.tensor([s for _, s in labels])
            batch["background"] = torch.tensor(
                [BACKGROUND_NAMES.index(it["scene"].background) for it in items]
            )
        elif "pooled" in items[0]:  # a data set encoded once (CachedItems)
            batch["pooled"] = torch.stack([it["pooled"] for it in items])
        else:
            batch["pooled"] = encode.pooled([it["caption"] for it in items])
        return batch

    return collate


def task_loss(net: NoisyGuide, x: torch.Tensor, sigma: torch.Tensor, batch: dict) -> torch.Tensor:
    pooled, cells = net(x, sigma)
    task = net.config.task
    if task == "fashion":
        return F.cross_entropy(pooled, batch["label"])
    if task == "shapes":
        flat = cells.flatten(2).transpose(1, 2)  # (B, 9, 33)
        loss = F.cross_entropy(
            flat[..., :CELL_CLASSES].reshape(-1, CELL_CLASSES), batch["cells"].reshape(-1)
        )
        sizes = batch["sizes"].reshape(-1)
        size_logits = flat[..., CELL_CLASSES:].reshape(-1, flat.shape[-1] - CELL_CLASSES)
        loss = loss + F.cross_entropy(size_logits, sizes, ignore_index=-1)
        return loss + F.cross_entropy(pooled, batch["background"])
    image = F.normalize(pooled, dim=-1)
    logits = net.scale() * image @ net.project_text(batch["pooled"]).t()
    target = torch.arange(len(logits))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def noised(x0: torch.Tensor, sigmas: torch.Tensor, clean: bool, rng: StepRNG):
    """x_0 + sigma * eps at a sigma drawn uniformly from the model's (its lowest when clean)."""
    index = (rng.rand() * len(sigmas)).long().clamp(max=len(sigmas) - 1)
    sigma = sigmas.min().expand(len(index)) if clean else sigmas[index]
    return x0 + sigma[:, None, None, None] * rng.randn(*x0.shape[1:]), sigma


def guide_recipe(cfg, net, dataset, encode, sigmas, card, args) -> Recipe:
    collate = collate_for(cfg.net.task, encode)

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        x, sigma = noised(batch["x0"], sigmas, cfg.clean, rng)
        return task_loss(net, x, sigma, batch)

    def export(trained: NoisyGuide, folder: Path) -> None:
        save_component(trained, folder, torch.float16)
        guide = load_guide(folder)  # the fp16 weights as saved are what the card measures
        held = held_out(args.data, encode.pipe.image_size)
        scores = card_scores(guide.net, held, collate, cfg.card_images)
        run = {"step": cfg.loop.steps, "samples_seen": cfg.loop.steps * cfg.loop.batch_size}
        full = {**card, "clean": cfg.clean, **scores}
        full |= {"training": training_card(folder.parent, run), "train_config": asdict(cfg)}
        atomic_write_json(folder / CARD_NAME, full)
        print(f"guide: {scores}; card in {folder / CARD_NAME}")

    public = {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
    return Recipe(NAME, net, dataset, collate, loss, None, export, public)


# ---------------------------------------------------------------- the card


def held_out(data: str, image_size: int):
    """The data's held-out split: fashion's test images, shapes' test scenes, a folder's
    heldout rows."""
    from t2i.data import load_dataset

    if data == "shapes":
        return load_dataset(data, image_size=image_size, split="test", length=5000)
    split = "heldout" if Path(data).is_dir() else "test"
    return load_dataset(data, image_size=image_size, split=split)


@torch.no_grad()
def card_scores(net: NoisyGuide, dataset, collate, n: int, seed: int = 0) -> dict:
    """Accuracy against sigma on n held-out items: top-1 class (fashion); every cell's object
    and whole scenes (shapes); top-1 retrieval of the caption among the batch's (clip)."""
    batch = collate(first_items(dataset, min(n, len(dataset))))
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch["x0"].shape, generator=gen)
    out = {}
    for sigma in CARD_SIGMAS:
        x = batch["x0"] + sigma * noise
        s = torch.full((len(x),), sigma)
        out[f"{sigma:g}"] = accuracy(net, x, s, batch)
    key = {"fashion": "accuracy", "shapes": "cells / scenes", "clip": "top-1 retrieval"}
    return {"n": len(batch["x0"]), "metric": key[net.config.task], "by_sigma": out}


def accuracy(net: NoisyGuide, x: torch.Tensor, sigma: torch.Tensor, batch: dict):
    pooled, cells = [], []
    for i in range(0, len(x), 250):
        p, c = net(x[i : i + 250], sigma[i : i + 250])
        pooled.append(p)
        cells.append(c)
    pooled = torch.cat(pooled)
    task = net.config.task
    if task == "fashion":
        return round(float((pooled.argmax(-1) == batch["label"]).float().mean()), 4)
    if task == "shapes":
        flat = torch.cat(cells).flatten(2).transpose(1, 2)[..., :CELL_CLASSES]
        right = flat.argmax(-1) == batch["cells"]
        return [round(float(right.float().mean()), 4), round(float(right.all(1).float().mean()), 4)]
    image = F.normalize(pooled, dim=-1)
    hits = []
    for i in range(0, len(x), 100):  # retrieval among 100 captions, as the emoji R-precision
        text = net.project_text(batch["pooled"][i : i + 100])
        logits = image[i : i + 100] @ text.t()
        hits.append(logits.argmax(-1) == torch.arange(len(logits)))
    return round(float(torch.cat(hits).float().mean()), 4)
