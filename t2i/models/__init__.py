"""Networks: UNet, autoencoders, text encoders, CLIP; each a config dataclass + module + presets."""

from t2i.models.autoencoder import AutoencoderConfig, AutoencoderKL, AutoencoderVQ, VQConfig
from t2i.models.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from t2i.models.autoencoder_patch import AutoencoderPatch, PatchConfig
from t2i.models.clip import CLIP, CLIPConfig
from t2i.models.text_encoder import (
    PretrainedTextEncoder,
    PretrainedTextEncoderConfig,
    TextEmbedding,
    TextTransformer,
    TextTransformerConfig,
)
from t2i.models.unet import UNet, UNetConfig

__all__ = [
    "CLIP",
    "AutoencoderConfig",
    "AutoencoderKL",
    "AutoencoderLoss",
    "AutoencoderLossConfig",
    "AutoencoderPatch",
    "AutoencoderVQ",
    "CLIPConfig",
    "PatchConfig",
    "PretrainedTextEncoder",
    "PretrainedTextEncoderConfig",
    "TextEmbedding",
    "TextTransformer",
    "TextTransformerConfig",
    "UNet",
    "UNetConfig",
    "VQConfig",
]
