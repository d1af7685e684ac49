"""Diffusion recipe: a text-conditioned UNet trained through a denoiser's own loss.

Pixel space (shapes 64x64, fashion 32x32) or latent space (`--autoencoder DIR`). Text from the
frozen pretrained encoder, embeddings cached by caption text, or (`--text_encoder trained`) from a
small word-level transformer trained with the UNet from scratch (as GLIDE trains its text
transformer): the frozen sentence encoder barely separates "left" from "right" (BENCHMARKS.md,
"Why position fails"). Captions are dropped to "" with probability `caption_dropout` so the model
also learns the unconditional prediction for classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from t2i.cascade import low_res_condition
from t2i.checkpoint import (
    CONFIG_NAME,
    INDEX_NAME,
    WEIGHTS_NAME,
    load_component,
    read_safetensors,
    save_model_folder,
)
from t2i.data.cache import file_digest
from t2i.denoisers import make_denoiser as wrap_network
from t2i.guidance import CFGDenoiser
from t2i.images import enlarge, shrink
from t2i.models.text_encoder import TextTransformer, TextTransformerConfig, build_vocab
from t2i.models.unet import UNet, UNetConfig
from t2i.samplers import get_sampler, sigmas_for
from t2i.schedules import DiscreteSchedule
from t2i.training.config import LoopConfig, OptimConfig, native_bf16
from t2i.training.data import (
    TextCache,
    component_dir,
    first_captions,
    first_items,
    latent_dataset,
    load_frozen_autoencoder,
    open_dataset,
)
from t2i.training.loop import Recipe, StepRNG, image_grid, seed_everything

TRAINED = "trained"  # --text_encoder value: a TextTransformer trained with the UNet


@dataclass
class DiffusionRecipeConfig:
    model: UNetConfig = field(default_factory=lambda: UNetConfig.preset("small"))
    parameterisation: str = "eps"  # eps | v | x0 | edm
    sigma_data: float = 0.5  # edm: the data's std (0.5 for pixels; 1 for latents of unit std)
    # edm: training log sigma ~ N(p_mean, 1.2^2); a data std twice EDM's 0.5 puts the same noise
    # levels at -1.2 + ln 2 = -0.5
    p_mean: float = -1.2
    schedule: str = "ddpm"  # DiscreteSchedule preset for eps/v/x0 (ddpm, sd, cosine)
    min_snr_gamma: float = 0.0  # 0: plain loss; 5: min-SNR weighting (Hang et al. 2023)
    snr_floor: float = 0.0  # with min_snr_gamma: the least weight (1: truncated SNR at high noise)
    # which timesteps training draws: "uniform" (DDPM) or "logit_normal": t/T = sigmoid(N(mean,
    # 1)), mean > 0 leans to high noise, where flat, redundant images get their layout (SD3)
    timesteps: str = "uniform"
    timestep_mean: float = 0.0
    # logit_normal: the fraction of each batch drawn so; the rest uniform, so a run can weigh the
    # layout's noise levels up without starving the details' (low noise) of draws
    timestep_mix: float = 1.0
    image_size: int = 64  # pixels of the data (the UNet sees image_size / f in latent space)
    # >0: read the data at data_size px and shrink it (area) to image_size: a cascade's base then
    # learns the very small images its upscaler is trained on (t2i/cascade.py), not a re-render
    data_size: int = 0
    # >0: an upscaler (t2i/cascade.py): the UNet also sees the image shrunk to low_res x low_res
    # and enlarged again to its own grid, on model.cond_channels = the image's channels (3 for
    # RGB, also in latent space)
    low_res: int = 0
    low_res_noise: float = 0.0  # conditioning augmentation: noise std ~ U(0, this) on that image
    data_length: int = 100_000  # items drawn from procedural sources (shapes)
    text_encoder: str = "minilm"  # frozen: minilm or a local HF folder; or "trained" (text_model)
    max_tokens: int = 40  # caption tokens (shapes captions reach ~31)
    text_model: TextTransformerConfig = field(  # text_encoder "trained": width = model.context_dim
        default_factory=lambda: TextTransformerConfig(dim=384, layers=4, heads=6)
    )
    vocab_captions: int = 5000  # captions of the data that build the trained encoder's words
    caption_dropout: float = 0.1  # P(caption -> "") for classifier-free guidance
    sample_prompts: tuple[str, ...] = ()  # empty: the first 8 captions of the data
    sample_seed: int = 0  # image i of every grid starts from seed sample_seed + i
    sample_steps: int = 20
    sampler: str = "ddim"
    guidance_scale: float = 3.0
    cache_dir: str = "data_cache"  # latents of the data set through --autoencoder
    # NCHW: with bf16 the recipe's step is 3-12% faster than NHWC, in fp32 within 3% (BENCHMARKS)
    channels_last: bool = False
    # bf16 autocast where the CPU has it natively: 1.6x the fp32 step (BENCHMARKS.md "Training")
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(bf16=native_bf16()))
    optim: OptimConfig = field(default_factory=OptimConfig)


def _small() -> DiffusionRecipeConfig:
    return DiffusionRecipeConfig(model=UNetConfig.preset("small", context_dim=384))


def _shapes() -> DiffusionRecipeConfig:
    """shapes 64x64: grids every 500 steps, checkpoints every 250; on 2 idle cores with bf16 a
    step of 32 images takes ~1.8 s (BENCHMARKS.md "Training"): 8,000 steps are ~4 hours."""
    cfg = _small()
    cfg.loop = replace(cfg.loop, steps=8000, batch_size=32, ckpt_every=250, sample_every=500)
    cfg.optim = OptimConfig(lr=3e-4, warmup_steps=200)
    return cfg


def _fashion() -> DiffusionRecipeConfig:
    model = UNetConfig.preset("small", context_dim=384, in_channels=1)
    return DiffusionRecipeConfig(model=model, image_size=32)


def _latent() -> DiffusionRecipeConfig:
    return DiffusionRecipeConfig(model=UNetConfig.preset("latent", context_dim=384))


def _tiny() -> DiffusionRecipeConfig:
    """For tests: a few thousand parameters on 16x16 images, a few steps; fp32, so that the
    tests' float comparisons (two processes vs one, resume) do not depend on the CPU."""
    return DiffusionRecipeConfig(
        model=UNetConfig.preset("tiny", context_dim=384),
        image_size=16,
        data_length=64,
        sample_steps=2,
        loop=LoopConfig(steps=8, batch_size=4, log_every=1, ckpt_every=4, sample_every=4),
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
    )


CONFIG_PRESETS = {
    "default": _small,
    "shapes": _shapes,
    "fashion": _fashion,
    "latent": _latent,
    "tiny": _tiny,
}


def preset(name: str) -> DiffusionRecipeConfig:
    if name not in CONFIG_PRESETS:
        raise ValueError(f"unknown diffusion preset {name!r}; choose from {sorted(CONFIG_PRESETS)}")
    return CONFIG_PRESETS[name]()


def make_denoiser(cfg: DiffusionRecipeConfig, net: nn.Module) -> nn.Module:
    schedule = None if cfg.parameterisation == "edm" else DiscreteSchedule.preset(cfg.schedule)
    return wrap_network(
        net,
        cfg.parameterisation,
        schedule,
        cfg.min_snr_gamma or None,
        cfg.sigma_data,
        cfg.p_mean,
        cfg.snr_floor,
    )


TIMESTEPS = ("uniform", "logit_normal")


def training_sigmas(cfg: DiffusionRecipeConfig, denoiser: nn.Module):
    """The recipe's sigma draw: fn(batch, generator) -> (batch,) sigmas (see cfg.timesteps)."""
    if cfg.timesteps == "uniform":
        return denoiser.training_sigmas
    sigmas = denoiser.sigmas

    def logit_normal(batch: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.sigmoid(cfg.timestep_mean + torch.randn(batch, generator=generator))
        if cfg.timestep_mix < 1.0:  # (only then: a run without a mix keeps its draws)
            uniform = torch.rand(batch, generator=generator)
            u = torch.where(torch.rand(batch, generator=generator) < cfg.timestep_mix, u, uniform)
        return sigmas[(u * len(sigmas)).long().clamp(max=len(sigmas) - 1)]

    return logit_normal


def check(cfg: DiffusionRecipeConfig) -> None:
    make_denoiser(cfg, nn.Identity())  # parameterisation, schedule, sigma_data: before any work
    if cfg.timesteps not in TIMESTEPS:
        raise ValueError(f"unknown timesteps {cfg.timesteps!r}; choose from {list(TIMESTEPS)}")
    if cfg.timesteps != "uniform" and cfg.parameterisation == "edm":
        raise ValueError("timesteps applies to the discrete schedules; edm draws its own sigmas")
    if not 0.0 < cfg.timestep_mix <= 1.0:
        raise ValueError(f"timestep_mix {cfg.timestep_mix} must be in (0, 1]")
    if cfg.timestep_mix < 1.0 and cfg.timesteps != "logit_normal":
        raise ValueError(
            "timestep_mix < 1 mixes logit_normal draws with uniform ones: it needs "
            f"timesteps logit_normal, not {cfg.timesteps!r}"
        )
    get_sampler(cfg.sampler)
    if not 0.0 <= cfg.caption_dropout < 1.0:
        raise ValueError(f"caption_dropout {cfg.caption_dropout} must be in [0, 1)")
    if cfg.text_encoder == TRAINED:
        cfg.text_model.__post_init__()
    check_low_res(cfg)
    if cfg.data_size and cfg.data_size <= cfg.image_size:
        raise ValueError(
            f"data_size {cfg.data_size} must be larger than image_size {cfg.image_size} "
            "(the data is shrunk to image_size), or 0"
        )
    cfg.model.__post_init__()  # overrides may have made the UNet config inconsistent


def check_low_res(cfg: DiffusionRecipeConfig) -> None:
    """An upscaler's settings agree with each other (a plain model has low_res 0)."""
    if cfg.low_res == 0:
        if cfg.model.cond_channels:
            raise ValueError(
                f"model.cond_channels {cfg.model.cond_channels} needs an input to fill them: "
                "give --low_res N (an upscaler) or leave cond_channels 0"
            )
        return
    if not 0 < cfg.low_res < cfg.image_size:
        raise ValueError(f"low_res {cfg.low_res} must be in [1, image_size {cfg.image_size})")
    if cfg.low_res_noise < 0:
        raise ValueError(f"low_res_noise must be >= 0, got {cfg.low_res_noise}")
    if cfg.sample_prompts:
        raise ValueError(
            "an upscaler's sample grid redraws the data's first images from their small "
            "versions: leave sample_prompts empty"
        )


def check_cond_channels(cfg: DiffusionRecipeConfig, image_channels: int) -> None:
    """An upscaler sees its small *image* (pixels, also for a latent upscaler) on cond_channels."""
    if cfg.low_res and cfg.model.cond_channels != image_channels:
        raise ValueError(
            f"low_res {cfg.low_res}: the UNet sees the small image on cond_channels, so "
            f"model.cond_channels must be the data's image channels ({image_channels}), "
            f"got {cfg.model.cond_channels}"
        )


def build(cfg: DiffusionRecipeConfig, args: argparse.Namespace) -> Recipe:
    """Everything is checked and loaded here, before the first step."""
    check(cfg)
    dataset, channels = open_dataset(args.data, cfg.data_size or cfg.image_size, cfg.data_length)
    check_cond_channels(cfg, channels)
    ae, ae_record = None, None
    if getattr(args, "autoencoder", None):
        if cfg.data_size:
            raise ValueError("data_size shrinks pixels: drop --autoencoder or data_size")
        ae, ae_record = load_frozen_autoencoder(args.autoencoder)
        ae.config.latent_side(cfg.image_size)  # the data's size fits it
        ae.config.check_network_factor(cfg.model.factor)
        key = {
            "data": args.data,
            "image_size": cfg.image_size,
            "length": cfg.data_length,
            "autoencoder": ae_record["digest"],
        }
        progress = not getattr(args, "no_progress", False)
        dataset = latent_dataset(
            dataset, ae.to_latent, key, cfg.cache_dir, progress, low_res=cfg.low_res
        )
        channels = ae.config.latent_channels
    init = getattr(args, "init", None)
    text = None if cfg.text_encoder == TRAINED else TextCache.load(cfg.text_encoder, cfg.max_tokens)
    text_dim = cfg.text_model.dim if text is None else text.dim
    if cfg.model.context_dim != text_dim:
        raise ValueError(f"model.context_dim {cfg.model.context_dim} != text width {text_dim}")
    if cfg.model.in_channels != channels:
        raise ValueError(f"model.in_channels {cfg.model.in_channels} != data channels {channels}")
    seed_everything(cfg.loop.seed)
    model = net = UNet(cfg.model)
    if text is None:
        encoder = init_text(cfg, init) if init else None
        if encoder is None:
            if not cfg.text_model.vocab:  # a resumed run has it in its config already
                cfg.text_model.vocab = build_vocab(first_captions(dataset, cfg.vocab_captions))
            encoder = TextTransformer(cfg.text_model)
        model = TextAndUNet(net, encoder)
    init_record = init_unet(net, init) if init else None
    return diffusion_recipe(cfg, model, dataset, text, ae, str(args.data), ae_record, init_record)


class TextAndUNet(nn.Module):
    """The UNet and the text encoder trained with it, as one module: the loop's optimizer, EMA,
    checkpoints and DDP cover both without knowing."""

    def __init__(self, unet: UNet, text: TextTransformer):
        super().__init__()
        self.unet, self.text = unet, text


class TrainedText:
    """captions -> (context, mask) through a trained TextTransformer; gradients flow."""

    def __init__(self, encoder: TextTransformer):
        self.encoder, self.dim = encoder, encoder.dim

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.encoder.encode(captions)
        return emb.context, emb.mask


def split(model: nn.Module, text: TextCache | None) -> tuple[nn.Module, TextCache | TrainedText]:
    """(UNet, captions -> (context, mask)) of the recipe's model."""
    if isinstance(model, TextAndUNet):
        return model.unet, TrainedText(model.text)
    return model, text


def init_text(cfg: DiffusionRecipeConfig, folder: str | Path) -> TextTransformer | None:
    """A fine-tuning run's trained text encoder: the --init folder's, when it has one (its words
    become the run's vocabulary). None when the folder's text encoder is a frozen one."""
    path = Path(folder) / "text_encoder"
    config = path / CONFIG_NAME
    if not config.is_file() or json.loads(config.read_text()).get("type") != "text_transformer":
        return None
    encoder = load_component(path).train()
    wanted = replace(cfg.text_model, vocab=encoder.config.vocab)
    if wanted != encoder.config:
        raise ValueError(
            f"--init {folder}: its text encoder {replace(encoder.config, vocab=[])} does not fit "
            f"this run's text_model {replace(cfg.text_model, vocab=[])}; give the same "
            "--text_model.* settings"
        )
    cfg.text_model = encoder.config
    return encoder


def init_unet(net: UNet, folder: str | Path) -> dict:
    """Start from a trained model folder's UNet (fine-tuning); returns {"path", "digest"}.

    The folder's UNet must have this run's architecture; parameters it lacks are allowed only where
    they start at zero and so change nothing (`model.position_features` added to a trained UNet),
    and so are extra input channels (`model.cond_channels` added: an upscaler from a base model).
    """
    weights = component_dir(folder, "unet") / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"--init {folder}: no unet/model.safetensors (a model folder?)")
    state = read_safetensors(weights)
    own = net.state_dict()  # freshly built: parts that start at zero are all zeros here
    state = widen_conv_in(state, own, net.config)
    shared = state.keys() & own.keys()
    problems = {
        "not in this UNet": sorted(state.keys() - own.keys()),
        "missing": sorted(k for k in own.keys() - state.keys() if own[k].count_nonzero() > 0),
        "of another shape": sorted(k for k in shared if state[k].shape != own[k].shape),
    }
    detail = "; ".join(f"{what}: {keys[:4]}" for what, keys in problems.items() if keys)
    if detail:
        raise ValueError(
            f"--init {folder}: its UNet does not fit this run's model config ({detail}); "
            "give the same --model.* settings it was trained with (see its unet/config.json)"
        )
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    return {"path": str(Path(folder).resolve()), "digest": file_digest(weights)}


def widen_conv_in(state: dict, own: dict, config: UNetConfig) -> dict:
    """A trained UNet's stem with zero weights for this UNet's extra x_cond channels, so the
    widened UNet computes what the trained one did until training moves them. The UNet
    concatenates x_cond after x before the patch stem, so the new channels come last."""
    key = "conv_in.weight"
    old, new = state.get(key), own[key]
    if old is None or old.shape == new.shape or config.cond_channels == 0:
        return state
    trained_in = config.in_channels * config.patch_size**2
    if old.shape[1] != trained_in or old.shape[0] != new.shape[0] or old.shape[2:] != new.shape[2:]:
        return state  # not just the extra channels: reported as a shape mismatch
    widened = torch.zeros(new.shape, dtype=old.dtype)
    widened[:, :trained_in] = old
    return {**state, key: widened}


def diffusion_recipe(
    cfg,
    model,
    dataset,
    text: TextCache | None,
    ae,
    data_name: str,
    ae_record: dict | None = None,
    init_record: dict | None = None,
) -> Recipe:
    """The recipe over a built UNet (or TextAndUNet): loss, fixed-prompt sample grid, export."""
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    net, encode = split(model, text)
    denoiser = make_denoiser(cfg, net)
    draw_sigmas = training_sigmas(cfg, denoiser)
    prompts, grid_low = list(cfg.sample_prompts) or None, None
    if cfg.low_res:  # an upscaler's grid: the first images shrunk, then what it draws from them
        firsts = first_items(dataset, 8)
        prompts = [item["caption"] for item in firsts]
        grid_low = torch.stack([small_image(item, cfg.low_res) for item in firsts])
    prompts = prompts or first_captions(dataset, 8)

    def collate(items: list[dict]) -> dict:
        x0 = torch.stack([it["latent"] if "latent" in it else it["image"] for it in items])
        if cfg.data_size:
            x0 = shrink(x0, (cfg.image_size, cfg.image_size))
        batch = {
            "x0": x0.contiguous(memory_format=fmt),
            "captions": [it["caption"] for it in items],
        }
        if cfg.low_res:
            batch["low"] = torch.stack([small_image(it, cfg.low_res) for it in items])
        return batch

    def loss(batch: dict, rng: StepRNG) -> torch.Tensor:
        x0 = batch["x0"]
        drop = rng.rand() < cfg.caption_dropout
        captions = ["" if d else c for d, c in zip(drop.tolist(), batch["captions"])]
        context, mask = encode(captions)
        sigma = rng.draw(draw_sigmas)
        noise = rng.randn(*x0.shape[1:])
        cond = {"context": context, "context_mask": mask}
        if cfg.low_res:
            low = batch["low"]
            aug = rng.randn(*low.shape[1:])
            scale = rng.rand() * cfg.low_res_noise
            cond["x_cond"] = low_res_condition(low, x0.shape[-2:], aug, scale)
        return denoiser.loss(x0, sigma, noise, **cond).mean()

    def sample(ema: nn.Module) -> np.ndarray:
        ema_net, ema_text = split(ema, text)
        images = generate(cfg, ema_net, ema_text, ae, prompts, cfg.sample_seed, grid_low)
        if grid_low is not None:
            images = torch.cat([enlarge_nearest(grid_low, images.shape[-1]), images])
        return image_grid(images, cols=4)

    def export(ema: nn.Module, folder: Path) -> None:
        ema_net, ema_text = split(ema, text)
        export_model(cfg, ema_net, ema_text, ae, folder, data_name, ae_record=ae_record)

    config = {**_public(cfg), "data": data_name}
    if ae_record is not None:  # latent runs: export finds the autoencoder again
        config["autoencoder"] = ae_record
    if init_record is not None:  # a fine-tuning run: what it started from
        config["init"] = init_record
    return Recipe("diffusion", model, dataset, collate, loss, sample, export, config)


def small_image(item: dict, low_res: int) -> torch.Tensor:
    """An item's image shrunk to low_res x low_res (a latent data set caches it as "low")."""
    if "low" in item:
        return item["low"]
    return shrink(item["image"][None], (low_res, low_res))[0]


def enlarge_nearest(low: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(low, size=(size, size), mode="nearest")


def generate(
    cfg, net, text, ae, prompts: list[str], seed: int, low: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1]; image i starts from torch.Generator seed `seed + i`.
    low (N, C, h, w): an upscaler's small images, one per prompt."""
    denoiser = make_denoiser(cfg, net)
    context, mask = text(prompts)
    u_ctx, u_mask = text([""])
    guided = CFGDenoiser(denoiser, {"context": u_ctx, "context_mask": u_mask}, cfg.guidance_scale)
    size = ae.config.latent_side(cfg.image_size) if ae is not None else cfg.image_size
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    noise = torch.stack([torch.randn(cfg.model.in_channels, size, size, generator=g) for g in gens])
    sigmas = sigmas_for(denoiser, cfg.sample_steps)
    cond = {"context": context, "context_mask": mask}
    if low is not None:
        cond["x_cond"] = enlarge(low, (size, size))
    x0 = get_sampler(cfg.sampler)(guided, noise * sigmas[0], sigmas, cond, generator=gens)
    return (ae.from_latent(x0) if ae is not None else x0).clamp(-1, 1)


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
) -> None:
    """A model folder (ARCHITECTURE.md): model_index.json, unet/, text_encoder/, autoencoder/.

    training: the data card's training facts (steps, images seen, time), when known.
    ae_record: {"path", "digest"} of the autoencoder folder; its own card joins this one.
    """
    components = {"unet": net, "text_encoder": text.encoder}
    if ae is not None:
        components["autoencoder"] = ae
    schedule = None if cfg.parameterisation == "edm" else DiscreteSchedule.preset(cfg.schedule)
    index = {
        "parameterisation": cfg.parameterisation,
        **({"sigma_data": cfg.sigma_data} if cfg.parameterisation == "edm" else {}),
        "schedule": schedule.to_dict() if schedule else None,
        "sampler": {
            "name": cfg.sampler,
            "steps": cfg.sample_steps,
            "guidance_scale": cfg.guidance_scale,
        },
        "image_size": cfg.image_size,
        **({"low_res": cfg.low_res} if cfg.low_res else {}),
        "data": {"source": data_name, "caption_dropout": cfg.caption_dropout},
    }
    save_model_folder(folder, components, {**index, **run_facts(training, ae_record)}, dtype)


def run_facts(training: dict | None, ae_record: dict | None) -> dict:
    """The data card's training facts and its autoencoder's own card, where known."""
    facts = {"training": training} if training else {}
    if ae_record is not None:
        facts["autoencoder"] = autoencoder_card(Path(ae_record["path"]))
    return facts


def autoencoder_card(folder: Path) -> dict:
    """The autoencoder folder's own data and training facts: part of what the model cost."""
    index_path = folder / INDEX_NAME
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    return {k: index[k] for k in ("data", "training") if k in index}


def _public(cfg: DiffusionRecipeConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("loop", "optim")}
