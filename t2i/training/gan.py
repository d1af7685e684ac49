"""GAN recipe: `t2i train gan --data fashion --preset fashion --out runs/gan_fashion`.

A text-conditional GAN (t2i/models/gan.py) against a frozen text encoder (`--text_encoder minilm`,
or a model folder's `text_encoder/`, e.g. the shipped `shapes`'), on the shared loop (exact
resume). Every step updates both players at once from one batch (simultaneous gradient steps): the
discriminators' terms reach only the discriminators (the fakes are detached), and the generator's
terms run the discriminators with their weights detached (`frozen`), so one backward pass gives
each player the gradient of its own loss. The discriminators learn `d_lr_scale` times faster
(two time-scales, Heusel et al. 2017).

The terms, per stage of resolution (hinge form; `loss bce` the log form of Reed et al.):
  D: max(0, 1 - D(x, t)) + w max(0, 1 + D(x, t_wrong)) + (1 - w) max(0, 1 + D(G(z, t), t))
     with w = `mismatch_weight` (GAN-CLS: 1/2; 0: no matching-aware term), t_wrong the caption of
     another image of the batch whose text differs;
  G: -D(G(z, t), t), and with `gan_int` > 0 also -D(G(z', t_mix), t_mix) on sentence embeddings
     t_mix = beta t + (1 - beta) t_wrong (GAN-INT, beta = 1/2);
  a penalty on the real, matching pairs: MA-GP (DF-GAN: k ||grad_(x, s) D||^p) or R1;
  ControlGAN's word-level logit (`model.word_discriminator`) with the same labels;
  the style encoder: ||z - S(G(z, t))||^2 on detached fakes (it never moves the generator).
Logged beside the loss: each term, and at each sample grid the diversity per prompt.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from t2i.checkpoint import DTYPES, load_component, resolve_model, save_model_folder
from t2i.evaluation.metrics import pairwise_rms
from t2i.gan_pipeline import GanPipeline
from t2i.images import image_grid
from t2i.models.gan import GanConfig, GanDiscriminator, GanNet, sentence_embedding
from t2i.models.text_encoder import PretrainedTextEncoder, TextTransformer
from t2i.training.config import LoopConfig, OptimConfig, native_bf16
from t2i.training.data import (
    TextCache,
    component_dir,
    first_captions,
    load_frozen_autoencoder,
    open_dataset,
)
from t2i.training.export import model_weights, nested_config, run_facts, training_card
from t2i.training.gan_losses import interpolated_term, mismatched, pyramid, stage_losses
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick

LOSSES = ("hinge", "bce")
PENALTIES = ("magp", "r1", "none")


@dataclass
class GanRecipeConfig:
    model: GanConfig = field(default_factory=lambda: GanConfig.preset("fashion"))
    data_length: int = 100_000
    text_encoder: str = "minilm"  # "minilm" or a model folder whose text_encoder/ is frozen here
    max_tokens: int = 40
    loss: str = "hinge"  # "hinge" or "bce" (Reed et al.'s log loss, non-saturating for G)
    mismatch_weight: float = 0.5  # the real-image, wrong-text term (GAN-CLS); 0 turns it off
    gan_int: float = 1.0  # weight of GAN-INT's interpolated-caption term for G; 0 turns it off
    int_beta: float = 0.5
    penalty: str = "magp"  # "magp" (DF-GAN), "r1" or "none"
    penalty_weight: float = 2.0  # MA-GP's k (R1's gamma)
    penalty_power: float = 6.0  # MA-GP's p
    # the penalty on every n-th step only, weighted n times (lazy regularisation, Karras et al.
    # 2020): its double backward costs as much as the rest of a step
    penalty_every: int = 4
    word_weight: float = 1.0  # the word-level logit's terms (with model.word_discriminator)
    style_weight: float = 1.0
    # ControlGAN's perceptual loss: ||phi(G(z, t)) - phi(x)||^2 between a fake and the real image
    # of its caption, phi the encoder of a model folder's autoencoder (a network trained here:
    # the bundled emoji's KL encoder, not the evaluation networks); "" turns it off
    perceptual: str = ""
    perceptual_weight: float = 1.0
    d_lr_scale: float = 4.0  # discriminator lr / generator lr
    sample_prompts: tuple[str, ...] = ()  # empty: the first 8 captions of the data
    sample_seed: int = 0
    diversity_seeds: int = 8  # images per prompt for the logged diversity
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(bf16=native_bf16()))
    optim: OptimConfig = field(default_factory=lambda: gan_optim(1e-4))


def gan_optim(lr: float) -> OptimConfig:
    """Adam with beta1 = 0 (as DF-GAN, BigGAN), constant lr, no decay or clipping; the EMA of
    the generator is what exports."""
    return OptimConfig(lr=lr, weight_decay=0.0, betas=(0.0, 0.9), schedule="constant",
                       warmup_steps=0, grad_clip=0.0, ema_decay=0.999)  # fmt: skip


def _fashion() -> GanRecipeConfig:
    """Fashion-MNIST 32 px grey against the frozen MiniLM (as the shipped `fashion`)."""
    cfg = GanRecipeConfig(model=GanConfig.preset("fashion"), data_length=60_000)
    cfg.loop = replace(cfg.loop, steps=2400, batch_size=64, ckpt_every=200, sample_every=400)
    return cfg


def _shapes() -> GanRecipeConfig:
    """shapes 64 px against the shipped `shapes` model's word-level text encoder (frozen: MiniLM
    barely separates left from right, docs/history.md)."""
    cfg = GanRecipeConfig(
        model=GanConfig.preset("shapes"), data_length=50_000, text_encoder="shapes"
    )
    cfg.loop = replace(cfg.loop, steps=1600, batch_size=32, ckpt_every=200, sample_every=400)
    return cfg


def _emoji() -> GanRecipeConfig:
    """The emoji 64 px set (`t2i data emoji`) against the frozen MiniLM (as the shipped `emoji`)."""
    cfg = GanRecipeConfig(model=GanConfig.preset("emoji"), data_length=100_000)
    cfg.loop = replace(cfg.loop, steps=1600, batch_size=32, ckpt_every=200, sample_every=400)
    return cfg


def _tiny() -> GanRecipeConfig:
    """For tests: 16 px, every option on; a word-level text encoder built for the test; fp32."""
    return GanRecipeConfig(
        model=GanConfig.preset(
            "tiny", context_dim=384, word_attention=True, word_discriminator=True, stages=2
        ),
        data_length=64,
        diversity_seeds=2,
        loop=LoopConfig(steps=8, batch_size=4, log_every=1, ckpt_every=4, sample_every=4),
        optim=gan_optim(1e-3),
    )


CONFIG_PRESETS = {
    "default": GanRecipeConfig,
    "fashion": _fashion,
    "shapes": _shapes,
    "emoji": _emoji,
    "tiny": _tiny,
}


def preset(name: str) -> GanRecipeConfig:
    return pick("gan", CONFIG_PRESETS, name)


class FrozenText:
    """captions -> (context, mask) from a frozen text encoder, cached by caption text: MiniLM
    padded to max_tokens (TextCache), or a model folder's word-level transformer."""

    def __init__(self, name: str, max_tokens: int):
        if name == "minilm":
            self.cache = TextCache.load("minilm", max_tokens)
            self.encoder = self.cache.encoder
        else:
            folder = component_dir(resolve_model(name), "text_encoder")
            self.encoder = load_component(folder).requires_grad_(False).eval()
            if not isinstance(self.encoder, (TextTransformer, PretrainedTextEncoder)):
                raise ValueError(f"text_encoder {name!r}: {folder} holds no text encoder")
            self.cache = TextCache(self.encoder, max_tokens) if isinstance(
                self.encoder, PretrainedTextEncoder) else None  # fmt: skip
        self.dim = self.encoder.dim

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None:
            return self.cache(captions)
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            emb = self.encoder.encode(captions)
        return emb.context.float(), emb.mask


class GanTrainer(nn.Module):
    """What the loop trains: the generator and style encoder (`net`, exported) and one
    discriminator per stage (kept in the checkpoints only)."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.net = GanNet(config)
        self.discriminators = nn.ModuleList(GanDiscriminator(config, r) for r in config.resolutions)


def check(cfg: GanRecipeConfig) -> None:
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss {cfg.loss!r}: choose from {list(LOSSES)}")
    if cfg.penalty not in PENALTIES:
        raise ValueError(f"penalty {cfg.penalty!r}: choose from {list(PENALTIES)}")
    if not 0.0 <= cfg.mismatch_weight < 1.0:
        raise ValueError(f"mismatch_weight {cfg.mismatch_weight} must be in [0, 1)")
    if not 0.0 <= cfg.int_beta <= 1.0:
        raise ValueError(f"int_beta {cfg.int_beta} must be in [0, 1]")
    if cfg.penalty_every < 1:
        raise ValueError(f"penalty_every {cfg.penalty_every} must be >= 1")
    weights = ("gan_int", "penalty_weight", "word_weight", "style_weight", "perceptual_weight")
    for key in (*weights, "d_lr_scale"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{key} {getattr(cfg, key)} must be >= 0")


def build(cfg: GanRecipeConfig, args: argparse.Namespace) -> Recipe:
    """Everything is checked and loaded here, before the first step."""
    check(cfg)
    size, channels = cfg.model.image_size, cfg.model.image_channels
    dataset, found = open_dataset(args.data, size, cfg.data_length, channels=channels)
    if found != channels:
        raise ValueError(f"--data {args.data} gives {found}-channel images; model.image_channels "
                         f"is {channels}")  # fmt: skip
    text = FrozenText(cfg.text_encoder, cfg.max_tokens)
    if text.dim != cfg.model.context_dim:
        raise ValueError(
            f"model.context_dim {cfg.model.context_dim} != the width of text_encoder "
            f"{cfg.text_encoder!r}: {text.dim}"
        )
    features = perceptual_features(cfg)
    seed_everything(cfg.loop.seed)
    # channels-last weights and images: oneDNN's convolutions ran a step 1.6-1.8x faster than in
    # NCHW on this CPU (files are written contiguous, so folders are unchanged)
    model = GanTrainer(cfg.model).to(memory_format=torch.channels_last)
    return gan_recipe(cfg, model, text, dataset, str(args.data), features)


def perceptual_features(cfg: GanRecipeConfig) -> nn.Module | None:
    """The frozen encoder of the perceptual loss, checked against the images, or None."""
    if not cfg.perceptual:
        return None
    folder = resolve_model(cfg.perceptual)
    if not (folder / "autoencoder").is_dir():
        raise ValueError(f"perceptual {cfg.perceptual!r}: {folder} holds no autoencoder/")
    ae, _ = load_frozen_autoencoder(folder)
    encoder = getattr(ae, "encoder", None)
    if encoder is None:
        raise ValueError(f"perceptual {cfg.perceptual!r}: its autoencoder has no trained encoder")
    c = cfg.model
    try:
        with torch.no_grad():
            encoder(torch.zeros(1, c.image_channels, c.image_size, c.image_size))
    except RuntimeError as err:
        raise ValueError(
            f"perceptual {cfg.perceptual!r}: its encoder cannot read {c.image_channels}-channel "
            f"{c.image_size} px images: {str(err).splitlines()[0][:200]}"
        ) from None
    return encoder.eval()


def gan_recipe(
    cfg, model: GanTrainer, text: FrozenText, dataset, data_name: str, features=None
) -> Recipe:
    prompts = list(cfg.sample_prompts) or first_captions(dataset, 8)
    c = cfg.model
    parts: dict[str, float] = {}

    def collate(items: list[dict]) -> dict:
        return {
            "images": torch.stack([it["image"] for it in items]).contiguous(
                memory_format=torch.channels_last
            ),
            "captions": [it["caption"] for it in items],
        }

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        parts.clear()
        z, z_int = rng.randn(c.z_dim), rng.randn(c.z_dim)
        ctx, mask = text(batch["captions"])
        s = sentence_embedding(ctx, mask)
        wrong, valid = mismatched(batch["captions"])
        wrong_text = (ctx[wrong], mask[wrong], s[wrong])
        fakes = model.net.generator(z, ctx, mask)
        reals = pyramid(batch["images"], c.resolutions)
        total = z.new_zeros(())
        for k, d in enumerate(model.discriminators):
            total = total + stage_losses(cfg, d, reals[k], fakes[k], (ctx, mask, s), wrong_text,
                                         valid, parts, k, rng.step)  # fmt: skip
        if cfg.gan_int > 0:
            total = total + cfg.gan_int * interpolated_term(cfg, model, z_int, ctx, mask, s,
                                                            wrong, valid, parts)  # fmt: skip
        style = F.mse_loss(model.net.style(fakes[-1].detach()).float(), z)
        parts["style"] = style.item()
        if features is not None:
            with torch.no_grad():
                target = features(batch["images"]).float()
            perceptual = F.mse_loss(features(fakes[-1]).float(), target)
            parts["perceptual"] = perceptual.item()
            total = total + cfg.perceptual_weight * perceptual
        return total + cfg.style_weight * style

    def sample(ema: nn.Module) -> Image.Image:
        pipe = sampling_pipeline(cfg, ema, text, data_name)
        images = pipe.generate_items([pipe.params(p, seed=cfg.sample_seed + i)
                                      for i, p in enumerate(prompts)])  # fmt: skip
        return image_grid(images, cols=4)

    def probe(ema: nn.Module) -> dict[str, float]:
        pipe = sampling_pipeline(cfg, ema, text, data_name)
        return {"diversity": diversity_per_prompt(pipe, prompts, cfg.diversity_seeds)}

    def export(ema: nn.Module, folder: Path) -> None:
        export_model(cfg, ema, text, folder, data_name)

    def lr_scale(name: str) -> float:
        return cfg.d_lr_scale if name.startswith("discriminators.") else 1.0

    config = {**public_config(cfg), "data": data_name}
    return Recipe("gan", model, dataset, collate, loss, sample, export, config,
                  lr_scale=lr_scale, parts=lambda: dict(parts), probe=probe)  # fmt: skip


def diversity_per_prompt(pipe, prompts: list[str], seeds: int) -> float:
    """Mean over prompts of the RMS pixel distance between images of one prompt (pairs of
    `seeds` draws, in [-1, 1] units): near 0 is mode collapse."""
    values = [pairwise_rms(pipe.generate(pipe.params(p, seed=0), n=seeds)) for p in prompts]
    return sum(values) / len(values)


def model_index(cfg: GanRecipeConfig, data_name: str) -> dict:
    return {
        "family": "gan",
        "image_size": cfg.model.image_size,
        "sampler": {"temperature": 1.0},
        "data": {"source": data_name, "text_encoder": cfg.text_encoder},
    }


def sampling_pipeline(cfg, model: GanTrainer, text: FrozenText, data_name: str) -> GanPipeline:
    """A pipeline over the live generator with the index export writes."""
    components = {"gan": model.net, "text_encoder": text.encoder}
    return GanPipeline(components, model_index(cfg, data_name), name="training")


def export_model(
    cfg,
    model: GanTrainer,
    text: FrozenText,
    folder: Path,
    data_name: str,
    dtype: torch.dtype = torch.float32,
    training: dict | None = None,
) -> None:
    """A model folder: model_index.json, gan/ (generator + style encoder), text_encoder/."""
    components = {"gan": model.net, "text_encoder": text.encoder}
    index = {**model_index(cfg, data_name), **run_facts(training, None)}
    save_model_folder(folder, components, index, dtype)


def export_checkpoint(found: Path, tensors: dict, meta: dict, out: Path, **kw) -> Path:
    """A gan run's checkpoint -> gan/ and text_encoder/ (`t2i export`). kw: run_dir, dtype,
    data, ema."""
    recipe = dict(meta["config"]["recipe"])
    recipe.pop("preset", None)
    data = recipe.pop("data", None) or kw["data"]
    cfg = nested_config(GanRecipeConfig, recipe, str(found), GanConfig)
    model = GanTrainer(cfg.model)
    model.load_state_dict(model_weights(tensors, kw["ema"]))
    text = FrozenText(cfg.text_encoder, cfg.max_tokens)
    card = training_card(kw["run_dir"], meta)
    export_model(cfg, model.eval(), text, out, data, DTYPES[kw["dtype"]], card)
    return out


def public_config(cfg: GanRecipeConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
