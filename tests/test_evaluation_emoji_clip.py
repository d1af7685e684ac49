"""The emoji CLIP: its input format, and the shipped model's R-precision on real held-out data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from t2i.evaluation.emoji_clip import (
    embed,
    emoji_clip_config,
    load_emoji_clip,
    load_images,
    load_rows,
    read_card,
    to_input,
)
from t2i.evaluation.metrics import clip_score, r_precision
from t2i.models.clip import CLIP

EMOJI = Path(__file__).resolve().parents[1] / "data_cache" / "emoji64"


def test_to_input_box_averages_to_the_encoder_size():
    clip = CLIP(emoji_clip_config())
    x = torch.randn(2, 3, 64, 64)
    y = to_input(clip, x)
    assert y.shape == (2, 3, 32, 32)
    torch.testing.assert_close(y[1, 2, 5, 7], x[1, 2, 10:12, 14:16].mean())
    with pytest.raises(ValueError, match="multiple of 32"):
        to_input(clip, torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="split"):
        load_rows(EMOJI, "test")


def test_shipped_card_states_its_heldout_r_precision():
    card = read_card()
    assert card["heldout"]["r_precision_top1_of_100"] > 10 * card["chance_r_precision_top1"]
    assert card["heldout"]["clip_score_matched"] > card["heldout"]["clip_score_shuffled"]


@pytest.mark.skipif(not (EMOJI / "metadata.jsonl").is_file(), reason="no emoji data built")
def test_shipped_r_precision_of_real_heldout_images_is_far_above_chance():
    from t2i.models.text_encoder import PretrainedTextEncoder

    rows = load_rows(EMOJI, "heldout")[:150]
    captions = [r["text"] for r in rows]
    pooled = PretrainedTextEncoder().encode(captions).pooled
    img, txt = embed(load_emoji_clip(), load_images(EMOJI, rows), pooled)
    groups = np.unique(captions, return_inverse=True)[1]
    assert r_precision(img, txt, k=1, pool=100, groups=groups) > 0.1  # chance: 0.01
    assert clip_score(img, txt) > clip_score(img, torch.roll(txt, 1, dims=0))
