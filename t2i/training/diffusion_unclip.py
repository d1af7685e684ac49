"""`t2i train unclip --init MODEL --clip CLIP --prior PRIOR --data DATA`: unCLIP's decoder, a
diffusion model drawing an image from its CLIP image embedding (Ramesh et al. 2022, sec. 2.1).

The decoder starts from a text-to-image diffusion model (`--init`, as DALL-E 2's decoder is a
modified GLIDE): its UNet gains the embedding as `pooled` (added to the time embedding) and as
`tokens` extra context tokens (`EmbeddingTokens`); both start at zero, so step 0 computes what
the model did. Each training image is embedded once by the generation CLIP (`--clip`; never the
one evaluation judges with). Per item, the caption is dropped to "" with `caption_dropout` (0.5,
as DALL-E 2) and the embedding to the null embedding with `embed_dropout` (0.1), independently:
the decoder learns to draw from the embedding alone (variations) and from nothing
(classifier-free guidance).

The run's `model/` is an unCLIP folder (`"family": "unclip"`): the decoder's components, the
CLIP, the embedding tokens and the prior of `--prior` (a `t2i train prior` run's model, trained
on the same CLIP: its card's digest is checked) with its sampling settings.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from t2i.checkpoint import load_component, read_json_object, save_model_folder
from t2i.models.unclip import EmbeddingTokens, EmbeddingTokensConfig, decoder_condition
from t2i.training import diffusion
from t2i.training.data import first_captions, open_dataset, text_condition
from t2i.training.diffusion_config import DiffusionRecipeConfig
from t2i.training.diffusion_init import adopt as adopt_base
from t2i.training.diffusion_model import make_denoiser, model_index
from t2i.training.diffusion_prior import clip_digest, embedded_pairs, load_clip, read_card
from t2i.training.export import run_facts, training_card
from t2i.training.grids import prompt_grid
from t2i.training.loop import Recipe, StepRNG
from t2i.training.presets import pick
from t2i.unclip_pipeline import UnclipPipeline

NAME = "unclip"


@dataclass
class UnclipRecipeConfig(DiffusionRecipeConfig):
    tokens: int = 4  # context tokens of the image embedding
    embed_dropout: float = 0.1  # the embedding dropped to the null embedding (guidance)


def _default() -> UnclipRecipeConfig:
    cfg = UnclipRecipeConfig(caption_dropout=0.5)
    cfg.optim = replace(cfg.optim, lr=1e-4, warmup_steps=100)
    return cfg


CONFIG_PRESETS = {"default": _default}


def preset(name: str) -> UnclipRecipeConfig:
    return pick(NAME, CONFIG_PRESETS, name)


def adopt(cfg: UnclipRecipeConfig, args) -> UnclipRecipeConfig:
    """The --init model's settings, its UNet reading the CLIP's embedding as `pooled`."""
    dropout = cfg.caption_dropout
    cfg = adopt_base(cfg, args)
    index = read_json_object(Path(args.init) / "model_index.json")
    interval = index.get("sampler", {}).get("guidance_interval")
    cfg.guidance_interval = tuple(interval) if interval else None
    cfg.caption_dropout = dropout
    if getattr(args, "clip", None):
        cfg.model = replace(cfg.model, pooled_dim=load_clip(args.clip).config.embed_dim)
    return cfg


class Decoder(nn.Module):
    """The UNet and the embedding's tokens, trained as one module (optimizer, EMA, checkpoints)."""

    def __init__(self, unet: nn.Module, tokens: EmbeddingTokens):
        super().__init__()
        self.unet, self.tokens = unet, tokens


class WithEmbeds(torch.utils.data.Dataset):
    """Items of `dataset` (cached latents or pixels) with "embed": item i's CLIP embedding."""

    def __init__(self, dataset, embeds: torch.Tensor):
        if len(dataset) != len(embeds):
            raise ValueError(f"{len(embeds)} embeddings for {len(dataset)} items")
        self.dataset, self.embeds = dataset, embeds

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "embed": self.embeds[index]}


def build(cfg: UnclipRecipeConfig, args: argparse.Namespace) -> Recipe:
    for flag in ("init", "clip", "prior"):
        if not getattr(args, flag, None):
            raise ValueError(
                f"t2i train unclip needs --{flag}: --init MODEL (the text-to-image model the "
                "decoder starts from), --clip DIR (the generation CLIP), --prior DIR (a "
                "`t2i train prior` model on that CLIP)"
            )
    clip = load_clip(args.clip)
    prior, prior_card = load_prior(args.prior, clip_digest(args.clip))
    if cfg.model.pooled_dim != clip.config.embed_dim:
        raise ValueError(
            f"model.pooled_dim {cfg.model.pooled_dim} != the CLIP's embed_dim "
            f"{clip.config.embed_dim}"
        )
    parts = diffusion.build_parts(cfg, args)
    if parts["text"] is None:
        raise ValueError("t2i train unclip needs a model with a frozen pretrained text encoder")
    raw, _ = open_dataset(args.data, cfg.image_size, cfg.data_length)
    embeds = torch.stack([p["embed"] for p in embedded_pairs(clip, raw)])
    tokens = EmbeddingTokens(
        EmbeddingTokensConfig(clip.config.embed_dim, cfg.model.context_dim, cfg.tokens)
    )
    model = Decoder(parts["model"], tokens)
    dataset = WithEmbeds(parts["dataset"], embeds)
    networks = {"clip": clip, "prior": prior, "ae": parts["ae"], "text": parts["text"]}
    return unclip_recipe(cfg, model, dataset, networks, prior_card, parts, args)


def load_prior(folder: str | Path, digest: str) -> tuple[nn.Module, dict]:
    """A prior's component and card; it must have been trained on the CLIP whose weights hash
    to `digest`."""
    prior = load_component(folder)
    card = read_card(folder)
    trained_on = card.get("clip", {}).get("digest")
    if trained_on != digest:
        raise ValueError(
            f"--prior {folder} was trained on the CLIP with weights {trained_on}; --clip has "
            f"{digest}: train the prior on the same CLIP"
        )
    return prior.requires_grad_(False), card


def unclip_recipe(cfg, model: Decoder, dataset, networks: dict, prior_card: dict, parts, args):
    denoiser = make_denoiser(cfg, model.unet)
    draw_sigmas = diffusion.training_sigmas(cfg, denoiser)
    text = networks["text"]
    inner = diffusion.collate_fn(cfg, torch.contiguous_format)
    prompts = list(cfg.sample_prompts) or first_captions(dataset, 8)

    def collate(items: list[dict]) -> dict:
        return {**inner(items), "embed": torch.stack([it["embed"] for it in items])}

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        x0 = batch["x0"]
        cond = text_condition(batch["captions"], cfg.caption_dropout, text, rng)
        keep = (rng.rand() >= cfg.embed_dropout).to(x0.dtype)
        full = decoder_condition(model.tokens, cond, batch["embed"] * keep[:, None])
        sigma = rng.draw(draw_sigmas)
        noise = rng.randn(*x0.shape[1:])
        return denoiser.loss(x0, sigma, noise, **full).mean()

    def folder_parts(ema: Decoder, data_name: str, training: dict | None = None):
        components = {
            "unet": ema.unet,
            "text_encoder": text.encoder,
            "clip": networks["clip"],
            "prior": networks["prior"],
            "image_tokens": ema.tokens,
        }
        if networks["ae"] is not None:
            components["autoencoder"] = networks["ae"]
        index = {
            **model_index(cfg, data_name),
            **run_facts(training, parts["ae_record"]),
            "family": "unclip",
            "prior": {**prior_card["sampling"], "kind": prior_card["kind"]},
            "clip": {
                "role": "generation: read by the decoder, predicted by the prior; never the "
                "evaluation CLIP",
                **prior_card["clip"],
            },
        }
        return components, index

    @torch.no_grad()
    def sample(ema: Decoder):
        components, index = folder_parts(ema, "")
        pipe = UnclipPipeline(components, index)
        items = [pipe.params(p, seed=cfg.sample_seed + i) for i, p in enumerate(prompts)]
        return prompt_grid(pipe.generate_items(items), prompts, cols=4)

    def export(ema: Decoder, folder: Path) -> None:
        run = {"step": cfg.loop.steps, "samples_seen": cfg.loop.steps * cfg.loop.batch_size}
        components, index = folder_parts(ema, str(args.data), training_card(folder.parent, run))
        save_model_folder(folder, components, index)

    config = {
        **diffusion.public_config(cfg),
        "data": str(args.data),
        "clip": prior_card["clip"],
        "prior": str(Path(args.prior).resolve()),
        "init": parts["init_record"],
    }
    if parts["ae_record"] is not None:
        config["autoencoder"] = parts["ae_record"]
    return Recipe(NAME, model, dataset, collate, loss, sample, export, config)
