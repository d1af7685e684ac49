"""Images in any of the project's forms -> the feature arrays the metrics take."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn


def images_to_tensor(images: Sequence[Image.Image] | torch.Tensor, channels: int) -> torch.Tensor:
    """PIL images (any mode) or a (B, C, H, W) tensor in [-1, 1] -> float (B, channels, H, W)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != channels:
            raise ValueError(
                f"image tensor must be (B, {channels}, H, W) in [-1, 1], got {tuple(images.shape)}"
            )
        return images.float()
    mode = {1: "L", 3: "RGB"}[channels]
    arrays = [np.asarray(im.convert(mode), dtype=np.float32) for im in images]
    if not arrays:
        raise ValueError("no images given")
    x = torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0
    return x[:, None] if channels == 1 else x.permute(0, 3, 1, 2)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: Sequence[Image.Image] | torch.Tensor,
    batch_size: int = 500,
    channels: int = 1,
) -> np.ndarray:
    """model.features over batches (eval mode, no grad) -> (N, D) float64 array."""
    x = images_to_tensor(images, channels)
    model.eval()
    out = [model.features(x[i : i + batch_size]).double() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()
