"""Autoregressive recipe: a token transformer over a trained VQ autoencoder's codes.

`t2i train autoregressive --data shapes --autoencoder VQ_FOLDER`: the data set is encoded to codes
once (cached on disk, like latent diffusion's latents), and the transformer learns each code from
the codes before it and the caption (cross-entropy, teacher forcing). Text comes from a word-level
transformer trained with it (default: the frozen sentence encoder barely separates "left" from
"right", docs/history.md, "Why position fails: the probe") or from the frozen pretrained encoder
(`--text_encoder minilm`). Captions are dropped to "" with probability `caption_dropout` for
classifier-free guidance."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from t2i.checkpoint import DTYPES, save_model_folder
from t2i.images import image_grid
from t2i.models.autoencoder import AutoencoderVQ
from t2i.models.text_encoder import TextTransformer, TextTransformerConfig, build_vocab
from t2i.models.token_transformer import (
    TokenTransformer,
    TokenTransformerConfig,
    check_sampling,
    sample_codes,
)
from t2i.training.config import LoopConfig, OptimConfig, native_bf16
from t2i.training.data import (
    TRAINED,
    TextCache,
    TrainedText,
    first_captions,
    latent_dataset,
    load_frozen_autoencoder,
    open_dataset,
)
from t2i.training.export import model_weights, nested_config, run_facts, training_card
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick


@dataclass
class AutoregressiveRecipeConfig:
    model: TokenTransformerConfig = field(
        default_factory=lambda: TokenTransformerConfig.preset("small")
    )
    image_size: int = 64
    data_length: int = 100_000
    text_encoder: str = TRAINED  # "trained" (text_model, width model.context_dim) or frozen minilm
    max_tokens: int = 40
    text_model: TextTransformerConfig = field(
        default_factory=lambda: TextTransformerConfig(dim=256, layers=3, heads=4)
    )
    vocab_captions: int = 5000
    caption_dropout: float = 0.1
    sample_prompts: tuple[str, ...] = ()  # empty: the first 8 captions of the data
    sample_seed: int = 0
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 0  # 0: all codes
    cache_dir: str = "data_cache"
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(bf16=native_bf16()))
    optim: OptimConfig = field(default_factory=OptimConfig)


def _shapes() -> AutoregressiveRecipeConfig:
    """shapes 64x64 through the shapes_vq autoencoder (16x16 codes); 50,000 scenes encoded once."""
    cfg = AutoregressiveRecipeConfig(
        model=TokenTransformerConfig.preset("shapes"),
        data_length=50_000,
        text_model=TextTransformerConfig(dim=128, layers=2, heads=4),
    )
    cfg.loop = replace(cfg.loop, steps=6000, batch_size=32, ckpt_every=250, sample_every=500)
    cfg.optim = OptimConfig(lr=5e-4, warmup_steps=200, weight_decay=0.01)
    return cfg


def _fashion() -> AutoregressiveRecipeConfig:
    """Fashion-MNIST 32 px grey through the fashion_vq autoencoder (8x8 codes): the shapes
    transformer over 64 codes, the whole training split encoded once."""
    cfg = AutoregressiveRecipeConfig(
        model=TokenTransformerConfig.preset("shapes", grid=8),
        image_size=32,
        data_length=60_000,
        text_model=TextTransformerConfig(dim=128, layers=2, heads=4),
    )
    cfg.loop = replace(cfg.loop, steps=1500, batch_size=64, ckpt_every=250, sample_every=500)
    cfg.optim = OptimConfig(lr=5e-4, warmup_steps=200, weight_decay=0.01)
    return cfg


def _tiny() -> AutoregressiveRecipeConfig:
    """For tests: a tiny transformer over 8x8 codes of 16x16 images; fp32."""
    return AutoregressiveRecipeConfig(
        model=TokenTransformerConfig.preset("tiny"),
        image_size=16,
        data_length=64,
        text_model=TextTransformerConfig.preset("tiny"),
        loop=LoopConfig(steps=8, batch_size=4, log_every=1, ckpt_every=4, sample_every=4),
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
    )


CONFIG_PRESETS = {
    "default": AutoregressiveRecipeConfig,
    "fashion": _fashion,
    "shapes": _shapes,
    "tiny": _tiny,
}


def preset(name: str) -> AutoregressiveRecipeConfig:
    return pick("autoregressive", CONFIG_PRESETS, name)


class TextAndTokens(nn.Module):
    """The token transformer and the text encoder trained with it, as one module for the loop."""

    def __init__(self, tokens: TokenTransformer, text: TextTransformer):
        super().__init__()
        self.tokens, self.text = tokens, text


def text_fn(model: nn.Module, cache: TextCache | None) -> TextCache | TrainedText:
    """captions -> (context, mask): through the trained encoder, or the frozen one's cache."""
    return cache if cache is not None else TrainedText(model.text)


def tokens_of(model: nn.Module) -> TokenTransformer:
    return model.tokens if isinstance(model, TextAndTokens) else model


def build(cfg: AutoregressiveRecipeConfig, args: argparse.Namespace) -> Recipe:
    """Everything is checked and loaded here, before the first step."""
    if not getattr(args, "autoencoder", None):
        raise ValueError("autoregressive training needs --autoencoder: a trained VQ folder")
    ae, ae_record = load_frozen_autoencoder(args.autoencoder)
    if not isinstance(ae, AutoencoderVQ):
        raise ValueError(f"--autoencoder {args.autoencoder}: a VQ autoencoder is needed, not KL")
    grid = ae.config.latent_side(cfg.image_size)
    if (cfg.model.grid, cfg.model.codebook_size) != (grid, ae.config.codebook_size):
        raise ValueError(
            f"model.grid {cfg.model.grid} / model.codebook_size {cfg.model.codebook_size} must be "
            f"{grid} / {ae.config.codebook_size}: {cfg.image_size} px through that autoencoder"
        )
    if not 0.0 <= cfg.caption_dropout < 1.0:
        raise ValueError(f"caption_dropout {cfg.caption_dropout} must be in [0, 1)")
    check_sampling(cfg.temperature, cfg.top_k)
    dataset, _ = open_dataset(args.data, cfg.image_size, cfg.data_length)
    key = {"data": args.data, "image_size": cfg.image_size, "length": cfg.data_length}
    codes = latent_dataset(
        dataset,
        codes_of(ae),
        {**key, "autoencoder": ae_record["digest"], "codes": True},
        cfg.cache_dir,
        not getattr(args, "no_progress", False),
    )
    cache = (
        None if cfg.text_encoder == TRAINED else TextCache.load(cfg.text_encoder, cfg.max_tokens)
    )
    text_dim = cfg.text_model.dim if cache is None else cache.dim
    if cfg.model.context_dim != text_dim:
        raise ValueError(f"model.context_dim {cfg.model.context_dim} != text width {text_dim}")
    seed_everything(cfg.loop.seed)
    model = TokenTransformer(cfg.model)
    if cache is None:
        if not cfg.text_model.vocab:  # a resumed run has it in its config already
            cfg.text_model.vocab = build_vocab(first_captions(dataset, cfg.vocab_captions))
        model = TextAndTokens(model, TextTransformer(cfg.text_model))
    return autoregressive_recipe(cfg, model, codes, cache, ae, str(args.data), ae_record)


def codes_of(ae: AutoencoderVQ):
    """images -> codes (B, 1, h, w) as floats, the shape the latent cache stores (exact). The
    encoder runs in bf16 where the CPU has it (the quantiser's distances stay fp32)."""

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16, enabled=native_bf16()):
            return ae.encode(x)[2][:, None].float()

    return encode


def autoregressive_recipe(cfg, model, codes, cache, ae, data_name: str, ae_record: dict) -> Recipe:
    encode = text_fn(model, cache)
    prompts = list(cfg.sample_prompts) or first_captions(codes, 8)

    def collate(items: list[dict]) -> dict:
        flat = torch.stack([it["latent"] for it in items]).flatten(1).long()
        return {"codes": flat, "captions": [it["caption"] for it in items]}

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        drop = rng.rand() < cfg.caption_dropout
        captions = ["" if d else c for d, c in zip(drop.tolist(), batch["captions"])]
        context, mask = encode(captions)
        logits = tokens_of(model)(batch["codes"], context, mask)
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["codes"].flatten())

    def sample(ema: nn.Module) -> Image.Image:
        return image_grid(generate(cfg, ema, cache, ae, prompts, cfg.sample_seed), cols=4)

    def export(ema: nn.Module, folder: Path) -> None:
        export_model(cfg, ema, cache, ae, folder, data_name, ae_record=ae_record)

    config = {**_public(cfg), "data": data_name, "autoencoder": ae_record}
    return Recipe("autoregressive", model, codes, collate, loss, sample, export, config)


@torch.no_grad()
def generate(cfg, model, cache, ae, prompts: list[str], seed: int) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1]; image i draws its codes with seed `seed + i`."""
    encode = text_fn(model, cache)
    context, mask = encode(prompts)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    codes = sample_codes(
        tokens_of(model),
        context,
        mask,
        encode([""]),
        cfg.guidance_scale,
        gens,
        cfg.temperature,
        cfg.top_k,
    )
    return ae.decode_codes(codes).clamp(-1, 1)


def export_model(
    cfg,
    model,
    cache,
    ae,
    folder: Path,
    data_name: str,
    dtype: torch.dtype = torch.float32,
    training: dict | None = None,
    ae_record: dict | None = None,
) -> None:
    """A model folder: model_index.json, transformer/, text_encoder/, autoencoder/."""
    text = model.text if cache is None else cache.encoder
    components = {"transformer": tokens_of(model), "text_encoder": text, "autoencoder": ae}
    index = {
        "family": "autoregressive",
        "sampler": {
            "guidance_scale": cfg.guidance_scale,
            "temperature": cfg.temperature,
            "top_k": cfg.top_k,
        },
        "image_size": cfg.image_size,
        "data": {"source": data_name, "caption_dropout": cfg.caption_dropout},
    }
    save_model_folder(folder, components, {**index, **run_facts(training, ae_record)}, dtype)


def export_checkpoint(found: Path, tensors: dict, meta: dict, out: Path, **kw) -> Path:
    """An autoregressive run's checkpoint -> transformer/, text_encoder/ and its VQ autoencoder
    (`t2i export`). kw: run_dir, dtype, data, ema."""
    recipe = dict(meta["config"]["recipe"])
    recipe.pop("preset", None)  # the preset it started from: the settings are all recorded
    data = recipe.pop("data", None) or kw["data"]
    ae_record = recipe.pop("autoencoder")
    cfg = nested_config(AutoregressiveRecipeConfig, recipe, str(found), TokenTransformerConfig)
    model, cache = TokenTransformer(cfg.model), None
    if cfg.text_encoder == TRAINED:
        model = TextAndTokens(model, TextTransformer(cfg.text_model))
    else:
        cache = TextCache.load(cfg.text_encoder, cfg.max_tokens)
    model.load_state_dict(model_weights(tensors, kw["ema"]))
    ae, _ = load_frozen_autoencoder(ae_record["path"], ae_record["digest"])
    card = training_card(kw["run_dir"], meta)
    export_model(cfg, model.eval(), cache, ae, out, data, DTYPES[kw["dtype"]], card, ae_record)
    return out


def _public(cfg: AutoregressiveRecipeConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
