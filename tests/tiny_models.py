"""Tiny untrained model folders for the tests that need a whole pipeline (seconds, not minutes)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch

from t2i.checkpoint import save_model_folder
from t2i.models.autoencoder import AutoencoderConfig, AutoencoderKL
from t2i.models.text_encoder import (
    PretrainedTextEncoder,
    PretrainedTextEncoderConfig,
    TextTransformer,
    TextTransformerConfig,
)
from t2i.models.unet import UNet, UNetConfig
from t2i.schedules import DiscreteSchedule

VOCAB = "a an photo of red blue green circle square star above below sneaker dress bag".split()


def write_tiny_model(
    folder: Path,
    *,
    parameterisation: str = "eps",
    sampler: str = "ddim",
    steps: int = 3,
    guidance: float = 2.0,
    image_size: int = 16,
    in_channels: int = 3,
    latent: bool = False,
    grid: bool = False,
    vocab: list[str] = VOCAB,
    minilm: bool = False,
) -> Path:
    """A model folder with a tiny UNet and text transformer (seeded: the same weights every time);
    latent=True adds a tiny KL autoencoder with 3 latent channels, grid=True a resampling one
    (16 px read at 12 -> 3x3 latents) under a UNet of one level; minilm=True reads prompts with
    the frozen pretrained MiniLM instead (as `emoji` does)."""
    torch.manual_seed(0)
    text = TextTransformer(TextTransformerConfig.preset("tiny", vocab=vocab))
    one_level = {"channels": (16,), "attention_levels": (0,)} if grid else {}
    if minilm:
        one_level["context_dim"] = 384
    resampled = {"channels": (16, 16, 32), "resample": 0.75} if grid else {}
    components = {"unet": UNet(UNetConfig.preset("tiny", in_channels=in_channels, **one_level))}
    if minilm:
        text = PretrainedTextEncoder(PretrainedTextEncoderConfig(max_length=32))
    components["text_encoder"] = text  # created first: the seeded weights stay as they were
    if latent or grid:
        components["autoencoder"] = AutoencoderKL(
            AutoencoderConfig.preset("tiny", latent_channels=in_channels, **resampled)
        )
    index = {
        "parameterisation": parameterisation,
        "schedule": DiscreteSchedule.preset("ddpm").to_dict(),
        "sampler": {"name": sampler, "steps": steps, "guidance_scale": guidance},
        "image_size": image_size,
    }
    save_model_folder(folder, components, index)
    return folder


def write_tiny_autoregressive_model(
    folder: Path, *, guidance: float = 2.0, top_k: int = 8, image_size: int = 16
) -> Path:
    """A model folder with a tiny token transformer over the (image_size / 2)^2 grid of a tiny VQ
    autoencoder's 64 codes, and a tiny text transformer; seeded weights."""
    from t2i.models.autoencoder import AutoencoderVQ, VQConfig
    from t2i.models.token_transformer import TokenTransformer, TokenTransformerConfig

    torch.manual_seed(0)
    components = {
        "transformer": TokenTransformer(
            TokenTransformerConfig.preset("tiny", grid=image_size // 2)
        ),
        "text_encoder": TextTransformer(TextTransformerConfig.preset("tiny", vocab=VOCAB)),
        "autoencoder": AutoencoderVQ(VQConfig.preset("tiny")),
    }
    index = {
        "family": "autoregressive",
        "sampler": {"guidance_scale": guidance, "temperature": 1.0, "top_k": top_k},
        "image_size": image_size,
    }
    save_model_folder(folder, components, index)
    return folder


def write_tiny_draw_model(folder: Path, *, image_size: int = 16, channels: int = 3) -> Path:
    """A model folder with a tiny AlignDRAW network (4 steps) and a tiny BiLSTM caption
    encoder; seeded weights."""
    from t2i.models.draw import DrawConfig, DrawNet
    from t2i.models.text_encoder import TextLSTM, TextLSTMConfig

    torch.manual_seed(0)
    config = DrawConfig.preset("tiny", image_size=image_size, image_channels=channels)
    components = {
        "draw": DrawNet(config),
        "text_encoder": TextLSTM(TextLSTMConfig(vocab=VOCAB, word_dim=16, hidden=16)),
    }
    save_model_folder(folder, components, {"family": "draw", "image_size": image_size})
    return folder


def write_tiny_gan_model(folder: Path, **config) -> Path:
    """A model folder with a tiny GAN generator + style encoder (16 px; `config` overrides the
    tiny preset) and a tiny text transformer; seeded weights."""
    from t2i.models.gan import GanConfig, GanNet

    torch.manual_seed(0)
    text = TextTransformer(TextTransformerConfig.preset("tiny", vocab=VOCAB))
    net = GanNet(GanConfig.preset("tiny", context_dim=text.dim, **config))
    index = {"family": "gan", "image_size": net.config.image_size}
    save_model_folder(folder, {"gan": net, "text_encoder": text}, index)
    return folder


def write_small_emoji_set(folder: Path, size: int, limit: int, heldout_fraction: float) -> Path:
    """Real emoji of every installed art style (`limit` per style, about a second to render);
    skips the test where scripts/install-emoji-sources.sh has installed none."""
    import pytest

    from t2i.data import emoji_sources as es
    from t2i.data.emoji import build_emoji_dataset

    if not any(es.missing_reason(s, es.sources_dir()) is None for s in es.STYLES):
        pytest.skip("no emoji style installed: bash scripts/install-emoji-sources.sh")
    build_emoji_dataset(
        folder, size=size, limit=limit, heldout_fraction=heldout_fraction, workers=1, verbose=False
    )
    return folder


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over a few bytes of data: a decompression bomb
    if anything decoded it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


LETTER_COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (20, 160, 40)}
LETTER_BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15)}


def write_letters_folder(folder: Path, count: int = 200, size: int = 64, seed: int = 0) -> Path:
    """A user's kind of folder: `count` captioned images of coloured capital letters on two
    backgrounds ("a red letter K on a black background"), name.png + name.txt, a little jitter
    of place and size."""
    import random

    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        letter = rng.choice("AEHKOTXZ")
        colour, background = rng.choice(list(LETTER_COLOURS)), rng.choice(list(LETTER_BACKGROUNDS))
        img = Image.new("RGB", (size, size), LETTER_BACKGROUNDS[background])
        font = ImageFont.load_default(size=round(size * rng.uniform(0.55, 0.75)))
        centre = (size / 2 + rng.uniform(-4, 4), size / 2 + rng.uniform(-4, 4))
        ImageDraw.Draw(img).text(centre, letter, LETTER_COLOURS[colour], font, anchor="mm")
        img.save(folder / f"{i:04d}.png")
        caption = f"a {colour} letter {letter} on a {background} background"
        (folder / f"{i:04d}.txt").write_text(caption + "\n")
    return folder


def write_tiny_unclip_model(folder: Path, *, regression: bool = False) -> Path:
    """An unCLIP folder: a tiny decoder UNet reading a 16-d CLIP embedding, a tiny CLIP over the
    text transformer's pooled states, a tiny diffusion prior (or regressor), the embedding's
    tokens; seeded weights, the zero-initialised parts set to small random values so the
    embedding changes the image."""
    from t2i.models.clip import CLIP, CLIPConfig
    from t2i.models.unclip import (
        DiffusionPrior,
        EmbeddingRegressor,
        EmbeddingTokens,
        EmbeddingTokensConfig,
        PriorConfig,
        RegressorConfig,
    )

    torch.manual_seed(0)
    text = TextTransformer(TextTransformerConfig.preset("tiny", vocab=VOCAB))
    e = 16
    unet = UNet(UNetConfig.preset("tiny", pooled_dim=e))
    clip = CLIP(CLIPConfig.preset("tiny", embed_dim=e, text_dim=text.dim))
    if regression:
        prior = EmbeddingRegressor(RegressorConfig(embed_dim=e, text_dim=e, hidden=16, depth=1))
    else:
        prior = DiffusionPrior(
            PriorConfig(embed_dim=e, text_dim=text.dim, dim=16, layers=1, heads=2)
        )
    tokens = EmbeddingTokens(EmbeddingTokensConfig(e, unet.config.context_dim, 2))
    with torch.no_grad():
        for p in [*tokens.parameters(), *unet.pooled_proj.parameters()]:
            p.normal_(0, 0.1)
    components = {
        "unet": unet,
        "text_encoder": text,
        "clip": clip,
        "prior": prior,
        "image_tokens": tokens,
    }
    schedule = DiscreteSchedule.preset("ddpm").to_dict()
    index = {
        "family": "unclip",
        "parameterisation": "eps",
        "schedule": schedule,
        "sampler": {"name": "ddim", "steps": 3, "guidance_scale": 2.0},
        "image_size": 16,
        "prior": {"schedule": DiscreteSchedule.preset("cosine").to_dict(), "steps": 4},
    }
    save_model_folder(folder, components, index)
    return folder
