"""`t2i train wuerstchen_b --autoencoder AE --data DATA`: a Würstchen-style model's stage B and
its semantic encoder, trained together (Pernias et al. 2023; t2i/wuerstchen_pipeline.py).

The encoder maps each training latent to its semantic grid (4x4x16 for the emoji autoencoder's
16x16x4); the grid, with Gaussian noise of std ~ U(0, semantic_noise) added, is enlarged to the
latent grid and read by the UNet on its cond_channels while it denoises the latent. The encoder
learns from stage B's diffusion loss alone: it keeps what the UNet cannot guess at high noise.
The noise bounds what the grid can carry in fine differences of value (stage C will draw it only
roughly) and teaches stage B to draw from an imperfect grid. Captions are read as usual (dropped
with caption_dropout for guidance).

The run's model/ is a Würstchen folder without stage C: it redraws images from their grids
(`WuerstchenPipeline.reconstruct`, also the sample grid: originals above, redrawings below).
`t2i train wuerstchen_c --stage-b RUN/model` trains the text-conditional stage C on it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from t2i.checkpoint import DTYPES, save_model_folder
from t2i.images import enlarge, image_grid
from t2i.models.semantic import SemanticConfig, SemanticEncoder
from t2i.models.unet import UNet, UNetConfig
from t2i.pipeline import Pipeline
from t2i.training import diffusion
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import TextCache, first_items, load_frozen_autoencoder, text_condition
from t2i.training.diffusion_config import DiffusionRecipeConfig
from t2i.training.diffusion_model import make_denoiser, model_index
from t2i.training.export import model_weights, nested_config, run_facts, training_card
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick
from t2i.wuerstchen_pipeline import WuerstchenPipeline

NAME = "wuerstchen_b"


@dataclass
class WuerstchenBConfig(DiffusionRecipeConfig):
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    semantic_noise: float = 0.3  # std ~ U(0, this) of the noise on the grid stage B reads


def _emoji() -> WuerstchenBConfig:
    """For the emoji autoencoder (16x16x4 latents): a 4x4x16 grid; a two-level UNet (64/128,
    attention at 8x8 and the middle), v, min-SNR-5; guidance 1.5 on the text."""
    return WuerstchenBConfig(
        model=UNetConfig(
            in_channels=4,
            cond_channels=16,
            channels=(64, 128),
            layers_per_block=1,
            attention_levels=(1,),
        ),
        semantic=SemanticConfig(in_channels=4, out_channels=16, channels=(64, 128, 256)),
        parameterisation="v",
        min_snr_gamma=5.0,
        guidance_scale=1.5,
        channels_last=True,
        loop=LoopConfig(steps=6000, batch_size=64, bf16=True, ckpt_every=250, sample_every=1000),
        optim=OptimConfig(lr=4e-4, warmup_steps=200),
    )


def _tiny() -> WuerstchenBConfig:
    """A few-second run for tests: 32 px, a 4-channel grid."""
    cfg = _emoji()
    cfg.image_size = 32
    cfg.model = replace(cfg.model, cond_channels=4, channels=(32,), attention_levels=(0,))
    cfg.model.groups = cfg.semantic.groups = 8
    cfg.semantic = replace(cfg.semantic, out_channels=4, channels=(16, 16, 16), groups=8)
    cfg.loop = replace(cfg.loop, steps=4, batch_size=4, ckpt_every=2, sample_every=0)
    return cfg


CONFIG_PRESETS = {"default": _emoji, "emoji": _emoji, "tiny": _tiny}


def preset(name: str) -> WuerstchenBConfig:
    return pick(NAME, CONFIG_PRESETS, name)


class StageB(nn.Module):
    """Stage B's UNet and the semantic encoder, trained as one module."""

    def __init__(self, unet: nn.Module, semantic: SemanticEncoder):
        super().__init__()
        self.unet, self.semantic = unet, semantic


def check(cfg: WuerstchenBConfig) -> None:
    cfg.semantic.__post_init__()
    if cfg.model.cond_channels != cfg.semantic.out_channels:
        raise ValueError(
            f"model.cond_channels {cfg.model.cond_channels} must be the grid's channels, "
            f"semantic.out_channels {cfg.semantic.out_channels}"
        )
    if cfg.semantic.in_channels != cfg.model.in_channels:
        raise ValueError(
            f"semantic.in_channels {cfg.semantic.in_channels} must be the latents' channels, "
            f"model.in_channels {cfg.model.in_channels}"
        )
    if not 0.0 <= cfg.semantic_noise <= 2.0:
        raise ValueError(f"semantic_noise {cfg.semantic_noise} must be in [0, 2]")
    if cfg.low_res or cfg.text_encoder == "trained":
        raise ValueError("stage B reads the frozen pretrained text encoder and no small image")


def build(cfg: WuerstchenBConfig, args: argparse.Namespace) -> Recipe:
    check(cfg)
    if not getattr(args, "autoencoder", None):
        raise ValueError(
            "t2i train wuerstchen_b needs --autoencoder DIR (stage B draws its latents)"
        )
    plain = replace(cfg, model=replace(cfg.model, cond_channels=0))  # for the diffusion checks
    parts = diffusion.build_parts(plain, args)
    side = parts["ae"].config.latent_side(cfg.image_size)
    seed_everything(cfg.loop.seed)
    model = StageB(UNet(cfg.model), SemanticEncoder(cfg.semantic))
    grid = cfg.semantic.grid_side(side)
    return stage_b_recipe(cfg, model, parts, grid, str(args.data))


def semantic_condition(
    semantic: SemanticEncoder, x0: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """The grid of latents x0, noised (std `scale` per item), enlarged to x0's grid."""
    grid = semantic(x0.float()) + noise * scale.view(-1, 1, 1, 1)
    return enlarge(grid, x0.shape[-2:])


def stage_b_recipe(cfg: WuerstchenBConfig, model: StageB, parts: dict, grid: int, data: str):
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.unet.to(memory_format=fmt)
    denoiser = make_denoiser(cfg, model.unet)
    draw_sigmas = diffusion.training_sigmas(cfg, denoiser)
    text, ae = parts["text"], parts["ae"]
    firsts = first_items(parts["dataset"], 8)

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        x0 = batch["x0"]
        cond = text_condition(batch["captions"], cfg.caption_dropout, text, rng)
        sigma = rng.draw(draw_sigmas)
        noise = rng.randn(*x0.shape[1:])
        grid_noise = rng.randn(cfg.semantic.out_channels, grid, grid)
        scale = rng.rand() * cfg.semantic_noise
        cond["x_cond"] = semantic_condition(model.semantic, x0, grid_noise, scale)
        return denoiser.loss(x0, sigma, noise, **cond).mean()

    def folder_parts(ema: StageB, training: dict | None = None) -> tuple[dict, dict]:
        return stage_b_folder(cfg, ema, text, ae, parts["ae_record"], data, training)

    @torch.no_grad()
    def sample(ema: StageB):
        pipe = stage_b_pipeline(*folder_parts(ema))
        latents = torch.stack([item["latent"] for item in firsts])
        images = pipe.upscaler.decode(latents)
        redrawn = pipe.reconstruct(images, [it["caption"] for it in firsts], cfg.sample_seed)
        return image_grid(torch.cat([images, redrawn]), cols=len(firsts))

    def export(ema: StageB, folder: Path) -> None:
        run = {"step": cfg.loop.steps, "samples_seen": cfg.loop.steps * cfg.loop.batch_size}
        save_model_folder(folder, *folder_parts(ema, training_card(folder.parent, run)))

    config = {**diffusion.public_config(cfg), "data": data, "autoencoder": parts["ae_record"]}
    collate = diffusion.collate_fn(cfg, fmt)
    return Recipe(NAME, model, parts["dataset"], collate, loss, sample, export, config)


def stage_b_folder(cfg, model: StageB, text, ae, ae_record: dict, data: str, training=None):
    """(components, index) of stage B's model folder."""
    components = {"unet": model.unet, "text_encoder": text.encoder, "autoencoder": ae}
    components["semantic"] = model.semantic
    grid = cfg.semantic.grid_side(ae.config.latent_side(cfg.image_size))
    index = {
        **model_index(cfg, data),
        **run_facts(training, ae_record),
        "family": "wuerstchen",
        "low_res": grid,
        "semantic_noise": cfg.semantic_noise,
        "autoencoder_source": ae_record,  # stage C encodes its data with the same weights
    }
    return components, index


def stage_b_pipeline(components: dict, index: dict) -> WuerstchenPipeline:
    stage_b = Pipeline(components, index)
    return WuerstchenPipeline(None, stage_b, components["semantic"].eval())


def export_checkpoint(found: Path, tensors: dict, meta: dict, out: Path, **kw) -> Path:
    """A stage B run's checkpoint -> its model folder (`t2i export`), as the run's end writes."""
    recipe = dict(meta["config"]["recipe"])
    for key in ("preset", "recipe", "init"):
        recipe.pop(key, None)
    data, ae_record = recipe.pop("data"), recipe.pop("autoencoder")
    recipe["semantic"] = SemanticConfig(**recipe["semantic"])  # nested_config leaves it a dict
    cfg = nested_config(WuerstchenBConfig, recipe, str(found))
    model = StageB(UNet(cfg.model), SemanticEncoder(cfg.semantic))
    model.load_state_dict(model_weights(tensors, kw["ema"]))
    ae, _ = load_frozen_autoencoder(ae_record["path"], ae_record["digest"])
    text = TextCache.load(cfg.text_encoder, cfg.max_tokens)
    training = training_card(kw["run_dir"], meta)
    components, index = stage_b_folder(cfg, model.eval(), text, ae, ae_record, data, training)
    save_model_folder(out, components, index, DTYPES[kw["dtype"]])
    return out
