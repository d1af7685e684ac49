"""`t2i train wuerstchen_c --stage-b STAGE_B --data DATA`: a Würstchen-style model's stage C, the
text-conditional diffusion model in the semantic grid (Pernias et al. 2023).

Every training image is encoded once: the autoencoder stage B was trained on (its latents are
the diffusion recipe's cache), then stage B's frozen semantic encoder (4x4x16 for emoji, values in
(-1, 1)). Stage C is an ordinary pixel-space diffusion UNet over those 16-channel 4x4 "images",
trained by the diffusion recipe's own loss (captions dropped for guidance); it never sees a
pixel, so a step costs a fraction of a 16x16 latent model's. The sample grid and the exported
model run all three stages (t2i/wuerstchen_pipeline.py).

The run's model/ is the Würstchen folder: stage B's folder with this stage C in prior/.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from t2i.checkpoint import (
    DTYPES,
    INDEX_NAME,
    atomic_write_json,
    read_json_object,
    save_model_folder,
)
from t2i.data.cache import LatentDataset
from t2i.families import load
from t2i.models.unet import UNet, UNetConfig
from t2i.pipeline import Pipeline
from t2i.training import diffusion
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import (
    TextCache,
    latent_dataset,
    load_frozen_autoencoder,
    open_dataset,
)
from t2i.training.diffusion_config import EMOJI_PROMPTS, DiffusionRecipeConfig
from t2i.training.diffusion_model import model_index
from t2i.training.export import model_weights, nested_config, training_card
from t2i.training.grids import prompt_grid
from t2i.training.loop import Recipe, seed_everything
from t2i.training.presets import pick
from t2i.wuerstchen_pipeline import STAGE_C_KEY, WuerstchenPipeline

NAME = "wuerstchen_c"
STAGE_C_DIR = "prior"


@dataclass
class WuerstchenCConfig(DiffusionRecipeConfig):
    pass


def _emoji() -> WuerstchenCConfig:
    """The 4x4x16 emoji grid: a one-level UNet (256 channels, two blocks and a transformer
    each, 16 positions), v, min-SNR-5, batches of 128; guidance 5 (the grid is where the prompt
    is drawn)."""
    return WuerstchenCConfig(
        model=UNetConfig(
            in_channels=16, channels=(256,), layers_per_block=2, attention_levels=(0,), head_dim=64
        ),
        image_size=4,
        parameterisation="v",
        min_snr_gamma=5.0,
        guidance_scale=5.0,
        sample_prompts=EMOJI_PROMPTS,
        loop=LoopConfig(steps=3000, batch_size=128, bf16=True, ckpt_every=250, sample_every=500),
        optim=OptimConfig(lr=3e-4, warmup_steps=200),
    )


def _tiny() -> WuerstchenCConfig:
    cfg = _emoji()
    cfg.model = replace(
        cfg.model, in_channels=4, channels=(32,), attention_levels=(0,), groups=8, head_dim=32
    )
    cfg.image_size = 4
    cfg.sample_prompts = ()
    cfg.loop = replace(cfg.loop, steps=4, batch_size=4, ckpt_every=2, sample_every=0)
    return cfg


CONFIG_PRESETS = {"default": _emoji, "emoji": _emoji, "tiny": _tiny}


def preset(name: str) -> WuerstchenCConfig:
    return pick(NAME, CONFIG_PRESETS, name)


def load_stage_b(folder: str | Path) -> WuerstchenPipeline:
    """A wuerstchen_b model folder (stage B and the semantic encoder, no stage C)."""
    pipe = load(folder)
    if not isinstance(pipe, WuerstchenPipeline) or pipe.base is not None:
        raise ValueError(f"--stage-b {folder}: not a `t2i train wuerstchen_b` model folder")
    return pipe


def build(cfg: WuerstchenCConfig, args: argparse.Namespace) -> Recipe:
    if not getattr(args, "stage_b", None):
        raise ValueError("t2i train wuerstchen_c needs --stage-b DIR (a wuerstchen_b model)")
    diffusion.check(cfg)
    stage_b = load_stage_b(args.stage_b)
    grid, channels = stage_b.index["low_res"], stage_b.semantic.config.out_channels
    if (cfg.image_size, cfg.model.in_channels) != (grid, channels):
        raise ValueError(
            f"image_size {cfg.image_size} and model.in_channels {cfg.model.in_channels} must be "
            f"stage B's grid: {grid} and {channels}"
        )
    text = TextCache.load(cfg.text_encoder, cfg.max_tokens)
    if cfg.model.context_dim != text.dim:
        raise ValueError(f"model.context_dim {cfg.model.context_dim} != text width {text.dim}")
    progress = not getattr(args, "no_progress", False)
    dataset = semantic_dataset(stage_b, args, cfg, progress)
    seed_everything(cfg.loop.seed)
    net = UNet(cfg.model)
    return stage_c_recipe(cfg, net, dataset, text, stage_b, Path(args.stage_b), str(args.data))


def semantic_dataset(stage_b: WuerstchenPipeline, args, cfg, progress: bool) -> LatentDataset:
    """Items {"latent": the image's semantic grid, "caption"}: the data through the autoencoder
    stage B was trained on (cached as the diffusion recipe caches it), then the encoder."""
    raw, _ = open_dataset(args.data, stage_b.image_size, cfg.data_length)
    source = stage_b.index.get("autoencoder_source") or {}
    try:
        ae, record = load_frozen_autoencoder(source["path"], source["digest"])
    except (KeyError, TypeError, FileNotFoundError, ValueError):  # moved: the folder's own copy
        ae, record = load_frozen_autoencoder(args.stage_b)
    key = {
        "data": args.data,
        "image_size": stage_b.image_size,
        "length": cfg.data_length,
        "autoencoder": record["digest"],
    }
    latents = latent_dataset(raw, ae.to_latent, key, cfg.cache_dir, progress)
    with torch.no_grad():
        grids = torch.cat([stage_b.semantic(chunk) for chunk in latents.latents.split(512)])
    return LatentDataset(grids, latents.captions)


def stage_c_index(cfg: WuerstchenCConfig, data: str, training: dict | None = None) -> dict:
    index = {**model_index(cfg, data), STAGE_C_KEY: "the semantic grid of the folder above"}
    return {**index, **({"training": training} if training else {})}


def stage_c_recipe(cfg, net: UNet, dataset, text: TextCache, stage_b, stage_b_dir: Path, data):
    """The diffusion recipe over the grids, its grid and export through the loaded `stage_b`."""
    recipe = diffusion.diffusion_recipe(cfg, net, dataset, text, None, data)
    prompts = list(cfg.sample_prompts) or [dataset[i]["caption"] for i in range(8)]

    @torch.no_grad()
    def sample(ema: UNet):
        stage_c = Pipeline({"unet": ema, "text_encoder": text.encoder}, stage_c_index(cfg, data))
        pipe = WuerstchenPipeline(stage_c, stage_b.upscaler, stage_b.semantic)
        items = [pipe.params(p, seed=cfg.sample_seed + i) for i, p in enumerate(prompts)]
        return prompt_grid(pipe.generate_items(items), prompts, cols=4)

    def export(ema: UNet, folder: Path) -> None:
        run = {"step": cfg.loop.steps, "samples_seen": cfg.loop.steps * cfg.loop.batch_size}
        write_folder(ema, text, cfg, stage_b_dir, folder, data, training_card(folder.parent, run))

    config = {**recipe.config, "stage_b": str(stage_b_dir.resolve())}
    return replace(recipe, name=NAME, sample=sample, export=export, config=config)


def write_folder(net, text, cfg, stage_b_dir: Path, folder: Path, data: str, training, dtype=None):
    """The Würstchen folder: stage B's folder, with stage C in prior/."""
    shutil.copytree(stage_b_dir, folder, dirs_exist_ok=True)
    components = {"unet": net, "text_encoder": text.encoder}
    index = stage_c_index(cfg, data, training)
    save_model_folder(folder / STAGE_C_DIR, components, index, dtype or torch.float32)
    top = read_json_object(folder / INDEX_NAME)
    atomic_write_json(folder / INDEX_NAME, {**top, "base": STAGE_C_DIR})


def export_checkpoint(found: Path, tensors: dict, meta: dict, out: Path, **kw) -> Path:
    """A stage C run's checkpoint -> the Würstchen folder (`t2i export`)."""
    recipe = dict(meta["config"]["recipe"])
    for key in ("preset", "recipe", "init"):
        recipe.pop(key, None)
    data, stage_b_dir = recipe.pop("data"), Path(recipe.pop("stage_b"))
    cfg = nested_config(WuerstchenCConfig, recipe, str(found))
    net = UNet(cfg.model)
    net.load_state_dict(model_weights(tensors, kw["ema"]))
    text = TextCache.load(cfg.text_encoder, cfg.max_tokens)
    training = training_card(kw["run_dir"], meta)
    write_folder(net.eval(), text, cfg, stage_b_dir, out, data, training, DTYPES[kw["dtype"]])
    return out
