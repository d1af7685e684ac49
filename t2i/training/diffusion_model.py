"""The diffusion recipe's model as the pipeline sees it: the networks it trains (a UNet, with
its text encoder or its learnt schedule), the denoiser over them, the model_index.json export
writes, and the live pipeline its sample grids are drawn with (what the exported folder draws).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from t2i.cascade import CascadePipeline
from t2i.checkpoint import save_model_folder
from t2i.denoisers import make_denoiser as wrap_network
from t2i.models.log_snr import LearnedLogSNR
from t2i.models.text_encoder import TextTransformer
from t2i.models.unet import UNet
from t2i.pipeline import Pipeline
from t2i.schedules import DiscreteSchedule
from t2i.training.data import TextCache, TrainedText
from t2i.training.diffusion_config import DiffusionRecipeConfig
from t2i.training.diffusion_vdm import LEARNED, LearnedSchedule, discrete_schedule
from t2i.training.export import run_facts


def recipe_schedule(cfg: DiffusionRecipeConfig, model: nn.Module | None = None):
    """The run's DiscreteSchedule: its preset, or the schedule `model` learnt (a fresh one before
    training); None for edm."""
    if cfg.parameterisation == "edm":
        return None
    if cfg.schedule != LEARNED:
        return DiscreteSchedule.preset(cfg.schedule)
    log_snr = model.log_snr if isinstance(model, LearnedSchedule) else LearnedLogSNR()
    return discrete_schedule(log_snr)


def make_denoiser(cfg: DiffusionRecipeConfig, net: nn.Module) -> nn.Module:
    schedule = recipe_schedule(cfg)
    return wrap_network(
        net,
        cfg.parameterisation,
        schedule,
        cfg.min_snr_gamma or None,
        cfg.sigma_data,
        cfg.p_mean,
        cfg.snr_floor,
        cfg.variance,
        cfg.vlb_weight,
    )


class TextAndUNet(nn.Module):
    """The UNet and the text encoder trained with it (or, for textual inversion, a frozen
    pretrained one with a learnt word), as one module: the loop's optimizer, EMA, checkpoints
    and DDP cover both without knowing."""

    def __init__(self, unet: UNet, text: TextTransformer):
        super().__init__()
        self.unet, self.text = unet, text


def split(model: nn.Module, text: TextCache | None) -> tuple[nn.Module, TextCache | TrainedText]:
    """(UNet, captions -> (context, mask)) of the recipe's model."""
    if isinstance(model, LearnedSchedule):
        model = model.inner
    if isinstance(model, TextAndUNet):
        return model.unet, TrainedText(model.text)
    return model, text


def sampling_pipeline(cfg, net, text, ae, schedule=None) -> Pipeline:
    """The live networks as the pipeline their exported folder would load: the same
    model_index.json, so the grid is drawn with the card's defaults (guidance scale and
    interval) through the one generation path."""
    components = {"unet": net, "text_encoder": text.encoder}
    if ae is not None:
        components["autoencoder"] = ae
    return Pipeline(components, model_index(cfg, "", schedule))


@torch.no_grad()
def generate(
    cfg,
    net,
    text,
    ae,
    prompts: list[str],
    seed: int,
    low: torch.Tensor | None = None,
    schedule: DiscreteSchedule | None = None,
) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1]; image i from prompts[i] and seed `seed + i`, with the
    card's sampler defaults. low (N, C, h, w): an upscaler's small images, one per prompt."""
    pipe = sampling_pipeline(cfg, net, text, ae, schedule)
    items = [pipe.params(prompt, seed=seed + i) for i, prompt in enumerate(prompts)]
    if low is None:
        return pipe.generate_items(items)
    seeds = [p.seed for p in items]  # the upscaler stage of a cascade, drawn from `low`
    return CascadePipeline(None, pipe).draw_from(items[0], seeds, pipe.encode_text(prompts), low)


def model_index(cfg, data_name: str, schedule: DiscreteSchedule | None = None) -> dict:
    """model_index.json of the recipe's model: parameterisation, schedule (the recipe's, or the
    one given: a learnt one), sampler defaults."""
    schedule = schedule or recipe_schedule(cfg)
    sampler = {"name": cfg.sampler, "steps": cfg.sample_steps, "guidance_scale": cfg.guidance_scale}
    if cfg.guidance_interval is not None:
        sampler["guidance_interval"] = list(cfg.guidance_interval)
    return {
        "parameterisation": cfg.parameterisation,
        **({"sigma_data": cfg.sigma_data} if cfg.parameterisation == "edm" else {}),
        **({"variance": cfg.variance} if cfg.variance != "fixed" else {}),
        "schedule": schedule.to_dict() if schedule else None,
        "sampler": sampler,
        "image_size": cfg.image_size,
        **({"low_res": cfg.low_res} if cfg.low_res else {}),
        "data": {"source": data_name, "caption_dropout": cfg.caption_dropout},
    }


def export_model(
    cfg,
    net,
    text,
    ae,
    folder: Path,
    data_name: str,
    dtype: torch.dtype = torch.float32,
    training: dict | None = None,
    ae_record: dict | None = None,
    schedule: DiscreteSchedule | None = None,
    extra: dict | None = None,
) -> None:
    """A model folder (ARCHITECTURE.md): model_index.json, unet/, text_encoder/, autoencoder/.

    training: the data card's training facts (steps, images seen, time), when known.
    ae_record: {"path", "digest"} of the autoencoder folder; its own card joins this one.
    schedule: a learnt schedule (else the recipe's preset).
    extra: keys that replace the index's (a distilled student's sampler and "consistency").
    """
    components = {"unet": net, "text_encoder": text.encoder}
    if ae is not None:
        components["autoencoder"] = ae
    index = {**model_index(cfg, data_name, schedule), **run_facts(training, ae_record)}
    index.update(extra or {})
    save_model_folder(folder, components, index, dtype)
