"""`t2i train controlnet --init MODEL --data D --control.kind edges|sketch|layout` (and
`t2i train t2i_adapter ...`): a spatial control (t2i/models/control.py) trained on a frozen
diffusion model through the model's own denoising loss, the condition derived from each data
item on the fly (t2i/data/conditions.py); the loop's checkpoints and exact resume.

The run adopts the base model's settings (`--init`); the base's weights never change. Captions
are dropped to "" with probability caption_dropout, 0.5 as ControlNet's paper, so the control
learns to carry the image's layout on its own (guess mode) as well as beside a prompt. The run's
`model/` folder receives `<name>/`, the folder `--control-model` loads (and a model folder's
controls/ holds).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from t2i.adapters import control as control_files
from t2i.adapters.lora import network_hash
from t2i.data.conditions import check_kind, condition
from t2i.images import image_grid
from t2i.models.control import ControlConfig, build_control, unet_grid
from t2i.training import diffusion
from t2i.training.config import LoopConfig, OptimConfig
from t2i.training.data import first_items, open_dataset, text_condition
from t2i.training.diffusion_config import DiffusionRecipeConfig
from t2i.training.diffusion_init import adopt as adopt_base
from t2i.training.diffusion_model import make_denoiser, recipe_schedule, sampling_pipeline, split
from t2i.training.loop import Recipe, StepRNG
from t2i.training.presets import pick

NAMES = ("controlnet", "t2i_adapter")  # the recipes' names: the arch each trains
GRID_ITEMS = 8


@dataclass
class ControlOptions:
    kind: str = "edges"  # the condition (t2i/data/conditions.py KINDS)
    hint_width: int = 64  # channels of the condition encoder
    adapter_blocks: int = 1  # T2I-Adapter: residual blocks per level (0: a strided conv each)


@dataclass
class ControlRecipeConfig(DiffusionRecipeConfig):
    control: ControlOptions = field(default_factory=ControlOptions)
    name: str = ""  # the control's name (its folder); "" = its kind (+ "-adapter")


def _default() -> ControlRecipeConfig:
    """1,500 steps of 32 at lr 3e-4 (ControlNet's 1e-5 is for a 1 B-parameter copy at batch
    256; on shapes' layout 3e-4 beat 1e-4 at 3,000 steps, 0.83 object IoU against 0.79), no
    EMA: the control is judged by how it follows its condition at the last step."""
    return ControlRecipeConfig(
        caption_dropout=0.5,
        loop=LoopConfig(steps=1500, batch_size=32, log_every=25, ckpt_every=250, sample_every=250),
        optim=OptimConfig(lr=3e-4, warmup_steps=50, weight_decay=0.0, ema_decay=0.0),
    )


def _tiny() -> ControlRecipeConfig:
    cfg = _default()
    cfg.control = replace(cfg.control, hint_width=8)
    cfg.loop = LoopConfig(steps=4, batch_size=2, log_every=1, ckpt_every=2, sample_every=2)
    cfg.sample_steps = 2
    cfg.data_length = 64
    return cfg


CONFIG_PRESETS = {"default": _default, "tiny": _tiny}
# A T2I-Adapter is trained from scratch (no copy of the base to start from): at 1e-4 its layout
# fidelity on shapes was 0.72 object IoU after 3,000 steps, at 1e-3 0.79 (BENCHMARKS.md
# "Spatial controls")
ADAPTER_LR = 1e-3


def adopt(cfg: ControlRecipeConfig, args) -> ControlRecipeConfig:
    """The base model's settings (--init), and the adapter's own learning rate where the
    preset's is the ControlNet's (a --optim.lr flag goes over either)."""
    cfg = adopt_base(cfg, args)
    is_adapter = str(getattr(args, "recipe", "")).replace("-", "_") == "t2i_adapter"
    if is_adapter and cfg.optim.lr == _default().optim.lr:
        cfg.optim.lr = ADAPTER_LR
    return cfg


def preset(name: str) -> ControlRecipeConfig:
    return pick("controlnet", CONFIG_PRESETS, name)


class Conditioned(Dataset):
    """Items of `dataset` (pixels or cached latents) with "hint": the condition of `kind` made
    from item i of `raw` (the same data as pixels; a sketch's strokes seeded by i)."""

    def __init__(self, dataset, raw, kind: str):
        if len(dataset) != len(raw):
            raise ValueError(f"{len(dataset)} items but {len(raw)} images to condition them on")
        self.dataset, self.raw, self.kind = dataset, raw, kind

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "hint": condition(self.kind, self.raw[index], seed=index)}


class ControlledNet(nn.Module):
    """The frozen base UNet fed by the control: net(x, t, hint=..., **cond), the network
    contract with the condition as one more input (what the denoiser's loss runs)."""

    def __init__(self, unet: nn.Module, control: nn.Module):
        super().__init__()
        self.unet, self.control = unet, control

    def forward(self, x, t, hint=None, **cond):
        residuals = self.control(x, t, hint.to(x.dtype), **cond)
        return self.unet(x, t, control=residuals, **cond)


class ControlRun(nn.Module):
    """What the loop trains and checkpoints: the frozen base (UNet, or UNet and its text
    encoder) and the control; only the control's parameters take gradients."""

    def __init__(self, base: nn.Module, control: nn.Module):
        super().__init__()
        self.base, self.control = base.requires_grad_(False), control


def build(cfg: ControlRecipeConfig, args: argparse.Namespace) -> Recipe:
    arch = getattr(args, "recipe", "controlnet").replace("-", "_")
    if arch not in NAMES:
        raise ValueError(f"recipe {arch!r} is none of {list(NAMES)}")
    if not getattr(args, "init", None):
        raise ValueError(f"t2i train {arch} needs --init MODEL: the model the control steers")
    check_kind(cfg.control.kind)
    parts = diffusion.build_parts(cfg, args)
    base, text, ae = parts["model"], parts["text"], parts["ae"]
    net, encode = split(base, text)
    raw, _ = open_dataset(args.data, cfg.image_size, cfg.data_length, net_channels(cfg, ae))
    dataset = Conditioned(parts["dataset"], raw, cfg.control.kind)
    dataset[0]  # a condition the data cannot give (layout without scenes) fails here
    side = ae.config.latent_side(cfg.image_size) if ae is not None else cfg.image_size
    config = ControlConfig(
        arch=arch,
        kind=cfg.control.kind,
        unet=net.config,
        image_size=cfg.image_size,
        grid=unet_grid(net.config, side),
        hint_width=cfg.control.hint_width,
        adapter_blocks=cfg.control.adapter_blocks,
    )
    control = build_control(config)
    if arch == "controlnet":
        control.init_from(net)
    run = ControlRun(base, control)
    name = cfg.name or cfg.control.kind + ("" if arch == "controlnet" else "-adapter")
    meta = {"name": name, "kind": config.kind, "arch": arch, "base": Path(args.init).name}
    meta["base_hash"] = network_hash(net)
    denoiser = make_denoiser(cfg, ControlledNet(net, control))
    grid = first_items(dataset, GRID_ITEMS)

    def sample(ema: ControlRun) -> Image.Image:
        ema_net, ema_text = split(ema.base, text)
        pipe = sampling_pipeline(cfg, ema_net, ema_text, ae, recipe_schedule(cfg))
        hints = torch.stack([item["hint"] for item in grid])
        prompts = [it["caption"] for it in grid]
        images = control_files.draw_conditioned(pipe, [ema.control], [hints], prompts)
        shown = hints.expand(-1, images.shape[1], -1, -1) * 2 - 1
        return image_grid(torch.cat([shown, images]), cols=len(grid))

    def export(ema: ControlRun, folder: Path) -> None:
        control_files.save(folder / name, ema.control, meta)

    config_record = {**diffusion.public_config(cfg), "data": str(args.data)}
    if parts["init_record"] is not None:
        config_record["init"] = parts["init_record"]
    collate = collate_fn(cfg)
    loss = loss_fn(cfg, encode, denoiser, diffusion.training_sigmas(cfg, denoiser))
    return Recipe(arch, run, dataset, collate, loss, sample, export, config_record)


def net_channels(cfg: ControlRecipeConfig, ae) -> int:
    """Channels of the raw images the conditions are made from (a grey pixel model's: 1)."""
    return 1 if cfg.model.in_channels == 1 and ae is None else 3


def collate_fn(cfg: ControlRecipeConfig):
    inner = diffusion.collate_fn(cfg, torch.contiguous_format)

    def collate(items: list[dict]) -> dict:
        return {**inner(items), "hint": torch.stack([it["hint"] for it in items])}

    return collate


def loss_fn(cfg, encode, denoiser, draw_sigmas):
    """The base's denoising loss with the control reading each item's condition; the draws
    in the diffusion recipe's order (captions dropped, sigma, noise)."""

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        x0 = batch["x0"]
        cond = text_condition(batch["captions"], cfg.caption_dropout, encode, rng)
        sigma = rng.draw(draw_sigmas)
        noise = rng.randn(*x0.shape[1:])
        return denoiser.loss(x0, sigma, noise, hint=batch["hint"], **cond).mean()

    return loss
