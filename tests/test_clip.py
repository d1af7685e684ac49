"""CLIP on the tiny preset: the InfoNCE loss falls on a toy image-caption set, both text towers."""

import pytest
import torch

from t2i.models.clip import CLIP, CLIPConfig
from t2i.models.text_encoder import TextEmbedding, TextTransformerConfig, build_vocab

COLOURS = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1), "white": (1, 1, 1)}


def _toy_pairs():
    """A coloured square in the left or right half, and its caption."""
    images, captions = [], []
    for name, rgb in COLOURS.items():
        for side in ("left", "right"):
            img = -torch.ones(3, 16, 16)
            cols = slice(1, 7) if side == "left" else slice(9, 15)
            img[:, 5:11, cols] = torch.tensor(rgb, dtype=torch.float)[:, None, None]
            images.append(img)
            captions.append(f"a {name} square on the {side}")
    return torch.stack(images), captions


def test_loss_falls_with_own_text_tower():
    torch.manual_seed(0)
    images, captions = _toy_pairs()
    text = TextTransformerConfig.preset("tiny", vocab=build_vocab(captions))
    clip = CLIP(CLIPConfig.preset("tiny", text=text))
    opt = torch.optim.Adam(clip.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = clip.loss(images, clip.encode_prompts(captions))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        logits = clip.logits(images, clip.encode_prompts(captions))
    assert (logits.argmax(1) == torch.arange(8)).float().mean() >= 0.75  # retrieves its caption


def test_external_text_embedding_and_temperature_clamp():
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig.preset("tiny", text_dim=24, max_logit_scale=10.0))
    images, _ = _toy_pairs()
    text = TextEmbedding(
        torch.randn(8, 3, 24), torch.ones(8, 3, dtype=torch.bool), torch.randn(8, 24)
    )
    with torch.no_grad():
        clip.logit_scale.fill_(10.0)  # exp(10) is far above the clamp
    logits = clip.logits(images, text)
    assert logits.shape == (8, 8) and logits.abs().max() <= 10.0 + 1e-4
    clip.loss(images, text).backward()
    assert clip.text_proj.weight.grad is not None
    assert clip.score(images, text).shape == (8,)
    with pytest.raises(ValueError, match="no text tower"):
        clip.encode_prompts(["a red square"])
    with pytest.raises(ValueError, match="choose from"):
        CLIPConfig.preset("huge")
