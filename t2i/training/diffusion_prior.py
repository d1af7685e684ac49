"""`t2i train prior --clip CLIP --data DATA`: unCLIP's prior, text -> CLIP image embedding.

The CLIP is the generation CLIP (a `clip` component folder trained here: `t2i train emoji_clip`
or `t2i train clip`), never the one evaluation judges with. Every training image is embedded
once, at build; the prior then learns from (caption, embedding) pairs alone, so a step costs
no image.

- kind "diffusion": DALL-E 2's diffusion prior (t2i/models/unclip.py), the clean embedding
  predicted (`x0`) from the noised one, the caption's text states and its CLIP text embedding;
  the caption (and with it the text embedding) dropped with `caption_dropout` for guidance.
- kind "regression": the baseline, an MLP from the CLIP text embedding to the image embedding,
  trained on the cosine.

The run's `model/` is the prior's component folder and card.json: the cosine between predicted
and true image embeddings of the data's held-out split (best of 1 and of 2 samples for the
diffusion prior) beside the CLIP text embedding's own cosine (no prior at all), and the
sampling settings an unCLIP folder copies (`t2i train unclip --prior DIR`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from t2i.checkpoint import (
    CONFIG_NAME,
    atomic_write_json,
    load_component,
    read_json_object,
    save_component,
)
from t2i.data import load_dataset
from t2i.data.cache import file_digest
from t2i.denoisers import make_denoiser
from t2i.models.clip import CLIP
from t2i.models.text_encoder import TextEmbedding, masked_mean
from t2i.models.unclip import (
    DiffusionPrior,
    EmbeddingRegressor,
    PriorConfig,
    RegressorConfig,
    embedding_input,
)
from t2i.schedules import DiscreteSchedule
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import TextCache, first_items, open_dataset
from t2i.training.export import training_card
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick
from t2i.unclip_pipeline import best_of, sample_prior

KINDS = ("diffusion", "regression")
CARD_NAME = "card.json"


@dataclass
class PriorRecipeConfig:
    kind: str = "diffusion"
    model: PriorConfig = field(default_factory=PriorConfig)
    regressor: RegressorConfig = field(default_factory=RegressorConfig)
    text_encoder: str = "minilm"
    max_tokens: int = 40  # the text states' length (the emoji model's encoder reads 40)
    schedule: str = "cosine"  # DiscreteSchedule preset of the prior's noise levels
    caption_dropout: float = 0.1
    data_size: int = 64  # side the images are read at, then box-averaged to the CLIP's
    eval_split: str = "heldout"
    sample_steps: int = 25  # DDIM steps of the prior (the card's figures; the folder's default)
    candidates: int = 2  # best-of-n by dot product with the text embedding
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(steps=3000, batch_size=256, ckpt_every=500)
    )
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=3e-4, weight_decay=0.05, warmup_steps=100)
    )


def _regression() -> PriorRecipeConfig:
    return PriorRecipeConfig(kind="regression")


def _tiny() -> PriorRecipeConfig:
    """For tests: a 2-layer prior over 16 px images, a few steps."""
    cfg = PriorRecipeConfig(model=PriorConfig(dim=32, layers=2, heads=2), data_size=32)
    cfg.loop = LoopConfig(steps=30, batch_size=16, log_every=5, ckpt_every=10, sample_every=0)
    cfg.optim = OptimConfig(lr=2e-3, warmup_steps=2)
    cfg.sample_steps = 5
    return cfg


CONFIG_PRESETS = {"default": PriorRecipeConfig, "regression": _regression, "tiny": _tiny}


def preset(name: str) -> PriorRecipeConfig:
    return pick("prior", CONFIG_PRESETS, name)


def build(cfg: PriorRecipeConfig, args: argparse.Namespace) -> Recipe:
    if cfg.kind not in KINDS:
        raise ValueError(f"kind {cfg.kind!r}: choose from {list(KINDS)}")
    clip_dir = getattr(args, "clip", None)
    if not clip_dir:
        raise ValueError("t2i train prior needs --clip DIR: the generation CLIP's folder")
    clip = load_clip(clip_dir)
    text = TextCache.load(cfg.text_encoder, cfg.max_tokens)
    e = clip.config.embed_dim
    cfg.model.embed_dim = cfg.regressor.embed_dim = cfg.regressor.text_dim = e
    cfg.model.text_dim = text.dim
    cfg.model.__post_init__()
    dataset, _ = open_dataset(args.data, cfg.data_size)
    held = load_dataset(args.data, image_size=cfg.data_size, split=cfg.eval_split)
    seed_everything(cfg.loop.seed)
    diffusion = cfg.kind == "diffusion"
    net = DiffusionPrior(cfg.model) if diffusion else EmbeddingRegressor(cfg.regressor)
    pairs = embedded_pairs(clip, dataset)
    record = {"path": str(Path(clip_dir).resolve()), "digest": clip_digest(clip_dir)}
    return prior_recipe(cfg, net, clip, text, pairs, embedded_pairs(clip, held), record, args)


def clip_folder(folder: str | Path) -> Path:
    """The CLIP component folder: `folder` itself, or its clip/ (a model folder holding one)."""
    path = Path(folder)
    return path / "clip" if (path / "clip" / CONFIG_NAME).is_file() else path


def load_clip(folder: str | Path) -> CLIP:
    clip = load_component(clip_folder(folder))
    if not isinstance(clip, CLIP):
        raise ValueError(f"--clip {folder}: holds a {type(clip).__name__}, not a CLIP")
    return clip.requires_grad_(False)


def clip_digest(folder: str | Path) -> str:
    return file_digest(clip_folder(folder) / "model.safetensors")


@torch.no_grad()
def embedded_pairs(clip: CLIP, dataset, batch: int = 256) -> list[dict]:
    """[{"embed": (E,) as `embedding_input`, "caption"}] of every item, in order."""
    items = first_items(dataset, len(dataset))
    out = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        images = torch.stack([it["image"] for it in chunk])
        x = F.adaptive_avg_pool2d(images, clip.config.image_size)
        embeds = embedding_input(clip.encode_image(x))
        out += [{"embed": e, "caption": it["caption"]} for e, it in zip(embeds, chunk)]
    return out


def text_embedding(clip: CLIP, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, E) CLIP text embeddings (as `embedding_input`) of text states pooled as the
    pretrained encoder pools (masked mean + L2): what the unCLIP family computes."""
    pooled = F.normalize(masked_mean(context, mask), dim=-1)
    return embedding_input(clip.encode_text(TextEmbedding(None, None, pooled)))


def prior_recipe(cfg, net, clip, text, pairs, held, clip_record, args) -> Recipe:
    schedule = DiscreteSchedule.preset(cfg.schedule)
    denoiser = make_denoiser(net, "x0", schedule) if cfg.kind == "diffusion" else None

    def collate(items: list[dict]) -> dict:
        return {
            "embed": torch.stack([it["embed"] for it in items]),
            "caption": [it["caption"] for it in items],
        }

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        x0 = batch["embed"]
        if denoiser is None:
            with torch.no_grad():
                target_text = text_embedding(clip, *text(batch["caption"]))
            return (1 - F.cosine_similarity(net(target_text), x0, dim=-1)).mean()
        drop = (rng.rand() < cfg.caption_dropout).tolist()
        captions = ["" if d else c for d, c in zip(drop, batch["caption"])]
        context, mask = text(captions)
        with torch.no_grad():
            pooled = text_embedding(clip, context, mask)
        pooled = pooled * (1 - torch.tensor(drop, dtype=pooled.dtype))[:, None]
        sigma = rng.draw(denoiser.training_sigmas)
        noise = rng.randn(*x0.shape[1:])
        cond = {"context": context, "context_mask": mask, "pooled": pooled}
        return denoiser.loss(x0, sigma, noise, **cond).mean()

    def export(ema, folder: Path) -> None:
        save_component(ema, folder)
        ema_denoiser = make_denoiser(ema, "x0", schedule).eval() if denoiser else None
        scores = prior_scores(cfg, ema.eval(), ema_denoiser, clip, text, held)
        run = {"step": cfg.loop.steps, "samples_seen": cfg.loop.steps * cfg.loop.batch_size}
        card = {
            "kind": cfg.kind,
            "clip": clip_record,
            "sampling": {
                "schedule": schedule.to_dict(),
                "steps": cfg.sample_steps,
                "candidates": cfg.candidates,
                "guidance": 1.0,
            },
            "heldout": scores,
            "command": command(args),
            "training": training_card(folder.parent, run),
        }
        atomic_write_json(folder / CARD_NAME, card)
        print(f"prior: held-out cosine {scores}; card in {folder / CARD_NAME}")

    public = {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
    public.update(data=str(args.data), clip=clip_record)
    return Recipe("prior", net, pairs, collate, loss, None, export, public)


@torch.no_grad()
def prior_scores(cfg, prior, denoiser, clip, text, held: list[dict]) -> dict:
    """Mean cosine between predicted and true image embeddings of the held-out pairs: the
    prior's (best of 1 and of `candidates` samples), and the text embedding's own."""
    captions = [p["caption"] for p in held]
    truth = torch.stack([p["embed"] for p in held])
    context, mask = text(captions)
    text_emb = text_embedding(clip, context, mask)
    out = {"n": len(held), "text_embedding_alone": cosine(text_emb, truth)}
    if denoiser is None:
        out["regression"] = cosine(prior(text_emb), truth)
        return out
    cond = {"context": context, "context_mask": mask, "pooled": text_emb}
    seeds = list(range(len(held)))
    samples = sample_prior(denoiser, cond, seeds, cfg.candidates, cfg.sample_steps)
    out["best_of_1"] = cosine(samples[:, 0], truth)
    out[f"best_of_{cfg.candidates}"] = cosine(best_of(samples, text_emb), truth)
    return out


def command(args) -> str:
    flags = ["--clip", str(args.clip), "--data", str(args.data), "--preset", str(args.preset)]
    return " ".join(["t2i train prior", *flags, *getattr(args, "overrides", [])])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item(), 4)


def read_card(folder: str | Path) -> dict:
    """card.json of a prior's folder (what `t2i train unclip --prior DIR` copies)."""
    return read_json_object(Path(folder) / CARD_NAME)
