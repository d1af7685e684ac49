"""`t2i train phrasing --init MODEL --data shapes:varied`: teach a model's trained text encoder
new phrasings by distillation from its own reading of the same facts in its caption grammar.

In the spirit of AltCLIP (Chen et al. 2022) and GlueGen (Qin et al. 2023), which align a new text
encoder to a frozen one on parallel text: here the pairs are a caption as people type it and the
canonical caption that states the same facts (t2i/data/shapes_phrasing.py), and the alignment is
measured where it matters, at the denoiser's output. The teacher is the --init model reading the
canonical caption; the student is the same frozen UNet reading the paraphrase through the
model's encoder, grown by the words of the data and `--text_model.layers` (new blocks start as
the identity). Per step, at one noise level and noise per item:

    loss = w(sigma) |net(x_t; student(paraphrase)) - net(x_t; teacher(canonical))|^2
           + the diffusion loss of the student's output against the real image
           + |student(canonical) - teacher(canonical)|^2 over the caption's words (the anchor)

The distillation term gives every phrasing the teacher's exact reading (a low-variance target);
the diffusion term grounds what the teacher never read (two of one object); the anchor holds the
encoder's own reading of the grammar where it was, on every item's canonical caption (without it
the old words drifted while the encoder learnt new ones, and the fixed prompts lost 0.04).
Captions are dropped to "" for both at once, so the student's unconditional reading stays the
teacher's. Only the text encoder learns by default (`train_parts` "text"): the UNet keeps what
it draws. The run's `model/` is an ordinary diffusion model folder (`t2i export` takes its
checkpoints too).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from t2i.checkpoint import load_component
from t2i.data import load_dataset
from t2i.data.shapes_phrasing import VariedShapesDataset
from t2i.models.text_encoder import masked_mean
from t2i.training import diffusion
from t2i.training.data import TrainedText
from t2i.training.diffusion_config import DiffusionRecipeConfig
from t2i.training.diffusion_init import adopt as adopt_base
from t2i.training.diffusion_model import make_denoiser, split
from t2i.training.loop import Recipe, StepRNG
from t2i.training.presets import pick

NAME = "phrasing"


def _default() -> DiffusionRecipeConfig:
    cfg = DiffusionRecipeConfig(train_parts="text")
    cfg.text_model = replace(cfg.text_model, layers=0)  # the --init model's encoder, not grown
    cfg.optim = replace(cfg.optim, lr=3e-4, warmup_steps=100)
    return cfg


def _shapes() -> DiffusionRecipeConfig:
    """the bundled `shapes`' last stage: its words as people type them, from the grammar model"""
    cfg = replace(diffusion.preset("shapes_uniform"), train_parts="text")
    cfg.text_model = replace(cfg.text_model, layers=4)
    cfg.max_tokens = cfg.text_model.max_length  # what --init adopts: paraphrases run longer
    cfg.data_length = 200_000
    cfg.loop = replace(cfg.loop, steps=7_000, ckpt_every=500, sample_every=0)
    cfg.optim = replace(cfg.optim, lr=3e-4, warmup_steps=100)
    return cfg


def _shapes2() -> DiffusionRecipeConfig:
    """the last stage of `shapes`: the same distillation once more, from the crowded stage's
    model (its UNet now the teacher's and the student's), on seed 1 at half the lr"""
    cfg = _shapes()
    cfg.loop = replace(cfg.loop, steps=5_000, seed=1)
    cfg.optim = replace(cfg.optim, lr=1.5e-4)
    return cfg


CONFIG_PRESETS = {"default": _default, "shapes_phrasing": _shapes, "shapes_phrasing2": _shapes2}


def preset(name: str) -> DiffusionRecipeConfig:
    return pick(NAME, CONFIG_PRESETS, name)


def adopt(cfg: DiffusionRecipeConfig, args) -> DiffusionRecipeConfig:
    """The --init model's settings; what learns stays this recipe's (the text encoder), and so
    does the depth the preset grows that encoder to (`shapes_phrasing`: 4 blocks from the grammar
    model's 2), which adopting the folder's encoder would otherwise undo."""
    parts, layers = cfg.train_parts, cfg.text_model.layers
    cfg = adopt_base(cfg, args)
    cfg.train_parts = parts
    cfg.text_model = replace(cfg.text_model, layers=max(cfg.text_model.layers, layers))
    return cfg


class Paired(torch.utils.data.Dataset):
    """Items of `dataset` (cached latents or pixels) with "canonical": the canonical caption of
    item i of the procedural source `raw`, found without drawing the image."""

    def __init__(self, dataset, raw: VariedShapesDataset):
        self.dataset, self.raw = dataset, raw

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "canonical": self.raw.canonical_caption(index)}


def paired_source(data: str, length: int) -> VariedShapesDataset:
    raw = load_dataset(data, split="train", length=length)
    if not isinstance(raw, VariedShapesDataset):
        raise ValueError(
            f"t2i train phrasing needs captions paired with their canonical wording: "
            f"--data shapes:varied, not {data!r}"
        )
    return raw


def build(cfg: DiffusionRecipeConfig, args: argparse.Namespace) -> Recipe:
    if not getattr(args, "init", None):
        raise ValueError("t2i train phrasing needs --init MODEL: the model whose words it teaches")
    if cfg.text_encoder != diffusion.TRAINED:
        raise ValueError(
            f"--init {args.init}: its text encoder is the frozen {cfg.text_encoder!r}; "
            "t2i train phrasing teaches a trained one (a word-level text_transformer)"
        )
    raw = paired_source(str(args.data), cfg.data_length)
    teacher = load_component(Path(args.init) / "text_encoder").eval().requires_grad_(False)
    recipe = diffusion.build(cfg, args)
    net, student = split(recipe.model, None)
    denoiser = make_denoiser(cfg, net)
    inner = recipe.collate

    def collate(items: list[dict]) -> dict:
        return {**inner(items), "canonical": [it["canonical"] for it in items]}

    loss = loss_fn(cfg, student, teacher, denoiser, diffusion.training_sigmas(cfg, denoiser))
    dataset = Paired(recipe.dataset, raw)
    return replace(recipe, name=NAME, dataset=dataset, collate=collate, loss=loss)


def loss_fn(cfg, student, teacher, denoiser, draw_sigmas):
    """Distillation to the teacher's reading of the canonical caption plus the diffusion loss;
    the draws in the diffusion recipe's order (captions dropped, sigma, noise)."""

    def read(encoder, captions: list[str]) -> dict:
        context, mask = encoder(captions)
        return {"context": context, "context_mask": mask}

    def terms(batch: dict, rng: StepRNG) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per item (B,): the distillation term, the diffusion loss and the anchor."""
        x0 = batch["x0"]
        drop = (rng.rand() < cfg.caption_dropout).tolist()
        captions = ["" if d else c for d, c in zip(drop, batch["captions"])]
        canonical = ["" if d else c for d, c in zip(drop, batch["canonical"])]
        sigma = rng.draw(draw_sigmas)
        noise = rng.randn(*x0.shape[1:])
        out, x = denoiser.noised_output(x0, sigma, noise, **read(student, captions))
        with torch.no_grad():
            grammar = read(teacher_text, canonical)
            target, _ = denoiser.noised_output(x0, sigma, noise, **grammar)
        distill = (out - target).pow(2).flatten(1).mean(1) * denoiser.loss_weight(sigma)
        anchor = reading_distance(read(student, canonical), grammar)
        return distill, denoiser.output_loss(out, x0, x, sigma), anchor

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        return sum(terms(batch, rng)).mean()

    teacher_text = TrainedText(teacher)  # frozen: read under no_grad
    loss.terms = terms
    return loss


def reading_distance(a: dict, b: dict) -> torch.Tensor:
    """Per item (B,): the mean squared difference of two readings of the same caption over its
    real tokens (both encoders tokenise the grammar's words alike, so the masks are equal)."""
    return masked_mean((a["context"] - b["context"]).pow(2), b["context_mask"]).mean(-1)


export_checkpoint = diffusion.export_checkpoint
