"""The diffusion recipe's configuration and its presets: `CONFIG_PRESETS` (one run each) and
`SHIPPED`, the bundled models as the stages that made them (t2i/training/presets.py runs them).
`t2i train diffusion --preset NAME --show-config` prints one resolved.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from t2i.models.text_encoder import TextTransformerConfig
from t2i.models.unet import UNetConfig
from t2i.training.config import LoopConfig, OptimConfig, native_bf16
from t2i.training.data import (
    TRAINED,
)
from t2i.training.presets import Stage, pick


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
    timestep_mean: float = 0.0  # logit_normal: the mean of N(mean, 1)
    # logit_normal: the fraction of each batch drawn so; the rest uniform, so a run can weigh the
    # layout's noise levels up without starving the details' (low noise) of draws
    timestep_mix: float = 1.0
    # "learned": the UNet also outputs its reverse variance (2C channels), trained by L_hybrid =
    # the loss above + vlb_weight * T * L_vlb (Nichol & Dhariwal 2021; 0.001 theirs); DDPM
    # sampling then uses it. "fixed": the sampler's
    variance: str = "fixed"
    vlb_weight: float = 0.001
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
    # metadata.jsonl fields whose shared values make a folder's images one group, drawn as one
    # (t2i/data/balance.py): ("name", "style") for the emoji set's skin tones; empty: all alike
    balance: tuple[str, ...] = ()
    # what learns: "all"; "text" (a trained text encoder, the UNet frozen); "text_attention" (the
    # text encoder and the UNet's cross-attention, what reads the text): a fine-tune that
    # teaches new phrasings while the UNet keeps what it draws; "unet" (a trained text encoder
    # frozen): a fine-tune of what the UNet draws that keeps how the encoder reads
    train_parts: str = "all"
    sample_prompts: tuple[str, ...] = ()  # empty: the first 8 captions of the data
    sample_seed: int = 0  # image i of every grid starts from seed sample_seed + i
    sample_steps: int = 20  # sampler steps of the grids (and the exported model's default)
    sampler: str = "ddim"  # sampler of the grids (and the exported model's default)
    guidance_scale: float = 3.0  # CFG scale of the grids (and the exported model's default)
    # the card's default guidance interval (sigma_lo, sigma_hi); None: guidance at every step
    guidance_interval: tuple[float, float] | None = None
    cache_dir: str = "data_cache"  # latents of the data set through --autoencoder
    # NCHW: with bf16 the recipe's step is 3-12% faster than NHWC, in fp32 within 3% (BENCHMARKS)
    channels_last: bool = False
    # bf16 autocast where the CPU has it natively: 1.6x the fp32 step (BENCHMARKS.md "Training")
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(bf16=native_bf16()))
    optim: OptimConfig = field(default_factory=OptimConfig)


def _small() -> DiffusionRecipeConfig:
    """The recipe's defaults: the `small` UNet (3 levels) on 64 px RGB, v, min-SNR-5, MiniLM."""
    return _learns(DiffusionRecipeConfig(model=UNetConfig.preset("small", context_dim=384)))


def _learns(cfg: DiffusionRecipeConfig) -> DiffusionRecipeConfig:
    """v-prediction with min-SNR-5, what every shipped model trained with: after 250 steps on a
    200-image folder eps gave coloured noise and this gave the right background (issue 35)."""
    cfg.parameterisation, cfg.min_snr_gamma = "v", 5.0
    return cfg


def _quick() -> DiffusionRecipeConfig:
    """Your own folder in about 15 minutes on 2 cores: the `small` UNet at 32 px, v, min-SNR-5,
    2,500 steps of 32 at lr 4e-4 (a 2x2 patch stem was 1.1x faster and left speckles)."""
    cfg = _small()
    cfg.image_size = 32
    cfg.loop = replace(
        cfg.loop, steps=2500, batch_size=32, log_every=20, ckpt_every=250, sample_every=500
    )
    cfg.optim = OptimConfig(lr=4e-4, warmup_steps=100)
    return cfg


def _shapes_small() -> DiffusionRecipeConfig:
    """64 px pixels through the `small` UNet, 8,000 steps of 32 (~4 h on 2 cores with bf16)."""
    cfg = _small()
    cfg.loop = replace(cfg.loop, steps=8000, batch_size=32, ckpt_every=250, sample_every=500)
    cfg.optim = OptimConfig(lr=3e-4, warmup_steps=200)
    return cfg


def _fashion_small() -> DiffusionRecipeConfig:
    """Fashion-MNIST 32 px grey through the `small` UNet, the recipe's other defaults."""
    model = UNetConfig.preset("small", context_dim=384, in_channels=1)
    return _learns(DiffusionRecipeConfig(model=model, image_size=32))


def _latent() -> DiffusionRecipeConfig:
    """The `latent` UNet (4 latent channels); give --autoencoder FOLDER."""
    return _learns(DiffusionRecipeConfig(model=UNetConfig.preset("latent", context_dim=384)))


def _tiny() -> DiffusionRecipeConfig:
    """For tests: a few thousand parameters on 16x16 images, a few steps, fp32.

    fp32, so that the tests' float comparisons (two processes vs one, resume) do not depend on
    the CPU."""
    return DiffusionRecipeConfig(
        model=UNetConfig.preset("tiny", context_dim=384),
        image_size=16,
        data_length=64,
        sample_steps=2,
        loop=LoopConfig(steps=8, batch_size=4, log_every=1, ckpt_every=4, sample_every=4),
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
    )


# ---------------------------------------------------------------- the shipped models
# Each is the config its run recorded (docs/training/*/config.json) plus the sampling defaults of
# its card; tests/test_training_presets.py holds them to both and to the bundled folders.


def _fashion() -> DiffusionRecipeConfig:
    """`fashion` stage 1, from scratch: 4.25 M UNet, 2x2 patch stem, v, min-SNR-5, 3,000 steps
    of 64 (the bundled `fashion` before its caption fine-tune)."""
    model = UNetConfig(
        in_channels=1,
        channels=(64, 128),
        layers_per_block=1,
        attention_levels=(1,),
        head_dim=32,
        groups=32,
        patch_size=2,
    )
    return DiffusionRecipeConfig(
        model=model,
        parameterisation="v",
        min_snr_gamma=5.0,
        image_size=32,
        channels_last=True,
        loop=LoopConfig(
            steps=3000, batch_size=64, bf16=True, log_every=50, ckpt_every=250, sample_every=500
        ),
        optim=OptimConfig(lr=4e-4, warmup_steps=200),
    )


def _fashion_varied() -> DiffusionRecipeConfig:
    """`fashion` stage 2, from stage 1's EMA weights: captions as people type them
    (`fashion:varied`: plurals, synonyms, sentence frames), 2,000 steps of 64 at lr 2e-4, EMA
    0.995."""
    cfg = _fashion()
    cfg.loop = LoopConfig(
        steps=2000, batch_size=64, bf16=True, log_every=20, ckpt_every=150, sample_every=500
    )
    cfg.optim = OptimConfig(lr=2e-4, warmup_steps=50, ema_decay=0.995)
    return cfg


def _fashion_varied2() -> DiffusionRecipeConfig:
    """`fashion` stage 3, from stage 2's EMA weights: 1,200 more steps at lr 1e-4 (seed 1);
    guidance 7 between sigma 0.3 and 2 (the card's default, chosen by measurement after the run:
    docs/training/fashion_prompts/README.md)."""
    cfg = _fashion_varied()
    cfg.loop = replace(cfg.loop, steps=1200, seed=1, sample_every=600)
    cfg.optim = replace(cfg.optim, lr=1e-4)
    cfg.guidance_scale, cfg.guidance_interval = 7.0, (0.3, 2.0)
    return cfg


EMOJI_PROMPTS = (
    "grinning face emoji, twemoji style",
    "red apple emoji, noto style",
    "fox emoji, fluent-3d style",
    "red heart emoji, openmoji style",
    "pizza emoji, twemoji style",
    "rocket emoji, noto style",
    "sun emoji, fluent-flat style",
    "cat face emoji, emojione style",
)


def _emoji() -> DiffusionRecipeConfig:
    """The bundled `emoji` UNet: 17.2 M, in the emoji autoencoder's 16x16x4 latents, v, min-SNR-5,
    8,000 steps of 64; guidance 5 between sigma 0.3 and 8.5 (the card's default)."""
    model = UNetConfig(in_channels=4, channels=(64, 128, 256), layers_per_block=1)
    return DiffusionRecipeConfig(
        model=model,
        parameterisation="v",
        min_snr_gamma=5.0,
        sample_prompts=EMOJI_PROMPTS,
        guidance_scale=5.0,
        guidance_interval=(0.3, 8.5),
        channels_last=True,
        loop=LoopConfig(steps=8000, batch_size=64, bf16=True, ckpt_every=200, sample_every=500),
        optim=OptimConfig(lr=4e-4, warmup_steps=200),
    )


def _emoji_balanced() -> DiffusionRecipeConfig:
    """The bundled `emoji`'s second stage, from the first's EMA weights: 4,000 more steps at lr
    1e-4 (seed 1), an emoji's skin tones in one style drawn as one image (balance name, style), so
    the other emoji are drawn 1.85x as often (t2i/data/balance.py)."""
    cfg = _emoji()
    cfg.balance = ("name", "style")
    cfg.loop = replace(cfg.loop, steps=4000, seed=1, ckpt_every=250, sample_every=1000)
    cfg.optim = replace(cfg.optim, lr=1e-4, warmup_steps=100)
    return cfg


def _emoji_balanced2() -> DiffusionRecipeConfig:
    """The bundled `emoji`'s third stage: the second's recipe once more from its EMA weights, on
    another seed (256 k more images; 1,024 k in all)."""
    cfg = _emoji_balanced()
    cfg.loop = replace(cfg.loop, seed=2)
    return cfg


def _emoji_balanced3() -> DiffusionRecipeConfig:
    """The bundled `emoji`'s fourth stage: the same recipe once more from the third's EMA weights,
    on seed 3 (256 k more images; 1,280 k in all)."""
    cfg = _emoji_balanced()
    cfg.loop = replace(cfg.loop, seed=3)
    return cfg


def _emoji_balanced4() -> DiffusionRecipeConfig:
    """The bundled `emoji`'s fifth stage: the same recipe from the fourth's EMA weights on seed 4,
    training timesteps drawn logit-normal (t/T = sigmoid(N(0, 1)): most draws at middle noise,
    where an emoji's shape is decided), stopped at step 3,000 of a 4,000-step cosine: the run's
    checkpoint that measured best (steps 2,000 / 3,000 / 4,000; docs/training/emoji_common)."""
    cfg = _emoji_balanced()
    cfg.timesteps = "logit_normal"
    cfg.loop = replace(cfg.loop, seed=4, steps=3000)
    cfg.optim = replace(cfg.optim, decay_steps=4000)
    return cfg


def _shapes_patch(steps: int, lr: float) -> DiffusionRecipeConfig:
    """The bundled `shapes` network: a one-level UNet (5.5 M, 128 channels, two transformer
    blocks, a linear patch embedding) over the patch autoencoder's 3x3x768 latents, x0,
    min-SNR-5 with an SNR floor of 1, and a 0.5 M word-level text encoder trained with it."""
    model = UNetConfig(
        in_channels=768,
        channels=(128,),
        layers_per_block=1,
        attention_levels=(0,),
        transformer_depth=2,
        context_dim=128,
        stem_kernel=1,
    )
    return DiffusionRecipeConfig(
        model=model,
        parameterisation="x0",
        min_snr_gamma=5.0,
        snr_floor=1.0,
        data_length=200_000,
        text_encoder=TRAINED,
        text_model=TextTransformerConfig(dim=128, layers=2, heads=4),
        loop=LoopConfig(steps=steps, batch_size=128, bf16=True, ckpt_every=250, sample_every=1000),
        optim=OptimConfig(lr=lr, warmup_steps=100),
    )


def _shapes_high_noise() -> DiffusionRecipeConfig:
    """`shapes` stage 1, from scratch: timesteps logit-normal (mean 1), where objects are placed."""
    cfg = _shapes_patch(steps=4500, lr=5e-4)
    cfg.timesteps, cfg.timestep_mean = "logit_normal", 1.0
    return cfg


def _shapes_uniform() -> DiffusionRecipeConfig:
    """`shapes` stage 2, from stage 1's EMA weights: uniform timesteps (shapes, binding, size)."""
    return _shapes_patch(steps=14_000, lr=3.5e-4)


def _shapes_crowded() -> DiffusionRecipeConfig:
    """`shapes` stage 4, from the phrasing stage's model: the UNet alone (the encoder's reading of
    prompts as people type them kept) on scenes of two and three objects (`shapes:crowded`), where
    the grammar model drew worst."""
    cfg = preset("shapes_uniform")  # through the registry, as the phrasing stage reads it
    cfg.train_parts = "unet"
    cfg.text_model = replace(cfg.text_model, layers=4)  # the phrasing stage's grown encoder
    cfg.max_tokens = 64
    cfg.loop = replace(cfg.loop, steps=6_000, ckpt_every=500, sample_every=0)
    cfg.optim = replace(cfg.optim, lr=1e-4)
    return cfg


CONFIG_PRESETS = {
    "default": _small,
    "quick": _quick,
    "shapes_small": _shapes_small,
    "fashion_small": _fashion_small,
    "latent": _latent,
    "tiny": _tiny,
    "fashion_base": _fashion,
    "fashion_varied": _fashion_varied,
    "fashion_varied2": _fashion_varied2,
    "emoji": _emoji,
    "emoji_balanced": _emoji_balanced,
    "emoji_balanced2": _emoji_balanced2,
    "emoji_balanced3": _emoji_balanced3,
    "emoji_balanced4": _emoji_balanced4,
    "shapes_high_noise": _shapes_high_noise,
    "shapes_uniform": _shapes_uniform,
    "shapes_crowded": _shapes_crowded,
}

EMOJI_DATA = "data_cache/emoji64"  # `t2i data emoji --out data_cache/emoji64`

# The shipped models: `t2i train diffusion --preset NAME --out DIR` runs the stages in order.
# Where a shipped run was stopped and resumed with a longer schedule, the stage holds the
# schedule it finished with (docs/training/README.md says which).
SHIPPED = {
    "fashion": (
        Stage("fashion", "diffusion", "fashion_base", "fashion"),
        Stage("varied", "diffusion", "fashion_varied", "fashion:varied", init="fashion"),
        Stage("varied2", "diffusion", "fashion_varied2", "fashion:varied", init="varied"),
    ),
    "emoji": (
        Stage("autoencoder", "autoencoder", "emoji", EMOJI_DATA),
        Stage("diffusion", "diffusion", "emoji", EMOJI_DATA, autoencoder="autoencoder"),
        Stage(
            "balanced",
            "diffusion",
            "emoji_balanced",
            EMOJI_DATA,
            init="diffusion",
            autoencoder="autoencoder",
        ),
        Stage(
            "balanced2",
            "diffusion",
            "emoji_balanced2",
            EMOJI_DATA,
            init="balanced",
            autoencoder="autoencoder",
        ),
        Stage(
            "balanced3",
            "diffusion",
            "emoji_balanced3",
            EMOJI_DATA,
            init="balanced2",
            autoencoder="autoencoder",
        ),
        Stage(
            "balanced4",
            "diffusion",
            "emoji_balanced4",
            EMOJI_DATA,
            init="balanced3",
            autoencoder="autoencoder",
        ),
    ),
    "shapes": (
        Stage("patch", "autoencoder", "patch", "shapes"),
        Stage("high_noise", "diffusion", "shapes_high_noise", "shapes", autoencoder="patch"),
        Stage(
            "uniform",
            "diffusion",
            "shapes_uniform",
            "shapes",
            init="high_noise",
            autoencoder="patch",
        ),
        # the words as people type them: the text encoder only (t2i/training/diffusion_phrasing.py)
        Stage("phrasing", "phrasing", "shapes_phrasing", "shapes:varied", init="uniform"),
        # two- and three-object scenes: the UNet alone, the phrasing stage's encoder frozen
        Stage("crowded", "diffusion", "shapes_crowded", "shapes:crowded", init="phrasing"),
        # the words once more, now read through the crowded stage's UNet (the encoder alone)
        Stage("phrasing2", "phrasing", "shapes_phrasing2", "shapes:varied", init="crowded"),
    ),
}


def preset(name: str) -> DiffusionRecipeConfig:
    return pick("diffusion", CONFIG_PRESETS, name)
