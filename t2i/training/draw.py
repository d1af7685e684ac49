"""AlignDRAW recipe: `t2i train draw --data fashion --preset fashion --out runs/draw`.

The network (t2i/models/draw.py) and its caption encoder train together from scratch on the
negative ELBO (t2i/draw_pipeline.py: a discretised Gaussian reconstruction of the 8-bit image
plus the KL of each step's posterior to the learnt prior), one posterior sample per image drawn
from the step's generator, so a resumed run repeats the straight run exactly. The loss is logged
in nats per dimension; nats per image is that times C x H x W. The caption encoder is the paper's
bidirectional LSTM (`--text_encoder lstm`) or the project's word-level transformer
(`--text_encoder transformer`). There is no caption dropout: AlignDRAW has no classifier-free
guidance.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from t2i.checkpoint import DTYPES, save_model_folder
from t2i.draw_pipeline import DrawPipeline, elbo
from t2i.images import image_grid
from t2i.models.draw import DrawConfig, DrawNet
from t2i.models.text_encoder import (
    TextLSTM,
    TextLSTMConfig,
    TextTransformer,
    TextTransformerConfig,
    build_vocab,
)
from t2i.training.config import LoopConfig, OptimConfig, native_bf16
from t2i.training.data import first_captions, open_dataset, report_unknown_words
from t2i.training.export import model_weights, nested_config, run_facts, training_card
from t2i.training.loop import Recipe, StepRNG, seed_everything
from t2i.training.presets import pick

TEXT_ENCODERS = ("lstm", "transformer")


@dataclass
class DrawRecipeConfig:
    model: DrawConfig = field(default_factory=lambda: DrawConfig.preset("fashion"))
    data_length: int = 100_000
    text_encoder: str = "lstm"  # "lstm" (the paper's BiLSTM) or "transformer" (word-level)
    text_lstm: TextLSTMConfig = field(default_factory=lambda: TextLSTMConfig(hidden=128))
    text_model: TextTransformerConfig = field(
        default_factory=lambda: TextTransformerConfig(dim=256, layers=2, heads=4)
    )
    vocab_captions: int = 5000
    sample_prompts: tuple[str, ...] = ()  # empty: the first 8 captions of the data
    sample_seed: int = 0
    temperature: float = 1.0  # the exported model's default: its prior's draws scaled by it
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(bf16=native_bf16()))
    optim: OptimConfig = field(default_factory=OptimConfig)


def _fashion() -> DrawRecipeConfig:
    """Fashion-MNIST 32 px grey: 16 glimpses, 6x6 reads, 8x8 writes, LSTMs of 256."""
    cfg = DrawRecipeConfig(model=DrawConfig.preset("fashion"), data_length=60_000)
    cfg.loop = replace(cfg.loop, steps=15_000, batch_size=64, ckpt_every=1000, sample_every=2000)
    cfg.optim = OptimConfig(lr=1e-3, warmup_steps=200, weight_decay=0.0, grad_clip=10.0)
    return cfg


def _shapes() -> DrawRecipeConfig:
    """shapes 64 px colour: 16 glimpses, 8x8 reads, 12x12 writes, LSTMs of 256."""
    cfg = DrawRecipeConfig(model=DrawConfig.preset("shapes"), data_length=50_000)
    cfg.loop = replace(cfg.loop, steps=7000, batch_size=64, ckpt_every=500, sample_every=1000)
    cfg.optim = OptimConfig(lr=1e-3, warmup_steps=200, weight_decay=0.0, grad_clip=10.0)
    return cfg


def _tiny() -> DrawRecipeConfig:
    """For tests: 16 px, 4 glimpses, LSTMs of 32; fp32."""
    return DrawRecipeConfig(
        model=DrawConfig.preset("tiny", image_channels=3),
        data_length=64,
        text_lstm=TextLSTMConfig(word_dim=16, hidden=16, max_length=32),
        text_model=TextTransformerConfig.preset("tiny"),
        loop=LoopConfig(steps=8, batch_size=4, log_every=1, ckpt_every=4, sample_every=4),
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
    )


CONFIG_PRESETS = {
    "default": DrawRecipeConfig,
    "fashion": _fashion,
    "shapes": _shapes,
    "tiny": _tiny,
}


def preset(name: str) -> DrawRecipeConfig:
    return pick("draw", CONFIG_PRESETS, name)


class TextAndDraw(nn.Module):
    """The DRAW network and its caption encoder, trained together: one module for the loop."""

    def __init__(self, draw: DrawNet, text: nn.Module):
        super().__init__()
        self.draw, self.text = draw, text


def text_encoder(cfg: DrawRecipeConfig) -> nn.Module:
    config = _text_config(cfg)
    return TextLSTM(config) if cfg.text_encoder == "lstm" else TextTransformer(config)


def build(cfg: DrawRecipeConfig, args: argparse.Namespace) -> Recipe:
    """Everything is checked and loaded here, before the first step."""
    size, channels = cfg.model.image_size, cfg.model.image_channels
    dataset, found = open_dataset(args.data, size, cfg.data_length, channels=channels)
    if found != channels:
        raise ValueError(f"--data {args.data} gives {found}-channel images; model.image_channels "
                         f"is {channels}")  # fmt: skip
    if not _text_config(cfg).vocab:  # a resumed run has it in its config already
        _text_config(cfg).vocab = build_vocab(first_captions(dataset, cfg.vocab_captions))
    seed_everything(cfg.loop.seed)
    text = text_encoder(cfg)
    if text.dim != cfg.model.context_dim:
        raise ValueError(f"model.context_dim {cfg.model.context_dim} != text width {text.dim}")
    report_unknown_words(text, first_captions(dataset, 200))
    model = TextAndDraw(DrawNet(cfg.model), text)
    sampling_pipeline(cfg, model, str(args.data))  # its checks (temperature) before any step
    return draw_recipe(cfg, model, dataset, str(args.data))


def _text_config(cfg: DrawRecipeConfig) -> TextLSTMConfig | TextTransformerConfig:
    if cfg.text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"text_encoder {cfg.text_encoder!r}: choose from {list(TEXT_ENCODERS)}")
    return cfg.text_lstm if cfg.text_encoder == "lstm" else cfg.text_model


def draw_recipe(cfg: DrawRecipeConfig, model: TextAndDraw, dataset, data_name: str) -> Recipe:
    prompts = list(cfg.sample_prompts) or first_captions(dataset, 8)
    dims = cfg.model.image_channels * cfg.model.image_size**2

    def collate(items: list[dict]) -> dict:
        return {
            "images": torch.stack([it["image"] for it in items]),
            "captions": [it["caption"] for it in items],
        }

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        noise = rng.randn(cfg.model.steps, cfg.model.z_dim)
        emb = model.text.encode(batch["captions"])
        recon, kl = elbo(model.draw, batch["images"], emb.context, emb.mask, noise)
        return (recon + kl).mean() / dims

    def sample(ema: nn.Module) -> Image.Image:
        pipe = sampling_pipeline(cfg, ema, data_name)
        images = pipe.generate_items([pipe.params(p, seed=cfg.sample_seed + i)
                                      for i, p in enumerate(prompts)])  # fmt: skip
        return image_grid(images, cols=4)

    def export(ema: nn.Module, folder: Path) -> None:
        export_model(cfg, ema, folder, data_name)

    config = {**_public(cfg), "data": data_name}
    return Recipe("draw", model, dataset, collate, loss, sample, export, config)


def model_index(cfg: DrawRecipeConfig, data_name: str) -> dict:
    return {
        "family": "draw",
        "image_size": cfg.model.image_size,
        "sampler": {"temperature": cfg.temperature},
        "data": {"source": data_name},
    }


def sampling_pipeline(cfg: DrawRecipeConfig, model: TextAndDraw, data_name: str) -> DrawPipeline:
    """A pipeline over the live networks with the index export writes: the grid is what the
    exported folder draws."""
    components = {"draw": model.draw, "text_encoder": model.text}
    return DrawPipeline(components, model_index(cfg, data_name), name="training")


def export_model(
    cfg: DrawRecipeConfig,
    model: TextAndDraw,
    folder: Path,
    data_name: str,
    dtype: torch.dtype = torch.float32,
    training: dict | None = None,
) -> None:
    """A model folder: model_index.json, draw/, text_encoder/."""
    components = {"draw": model.draw, "text_encoder": model.text}
    index = {**model_index(cfg, data_name), **run_facts(training, None)}
    save_model_folder(folder, components, index, dtype)


def export_checkpoint(found: Path, tensors: dict, meta: dict, out: Path, **kw) -> Path:
    """A draw run's checkpoint -> draw/ and text_encoder/ (`t2i export`). kw: run_dir, dtype,
    data, ema."""
    recipe = dict(meta["config"]["recipe"])
    recipe.pop("preset", None)  # the preset it started from: the settings are all recorded
    data = recipe.pop("data", None) or kw["data"]
    cfg = nested_config(DrawRecipeConfig, recipe, str(found), DrawConfig)
    model = TextAndDraw(DrawNet(cfg.model), text_encoder(cfg))
    model.load_state_dict(model_weights(tensors, kw["ema"]))
    card = training_card(kw["run_dir"], meta)
    export_model(cfg, model.eval(), out, data, DTYPES[kw["dtype"]], card)
    return out


def _public(cfg: DrawRecipeConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
