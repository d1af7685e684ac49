"""The emoji CLIP: its input format, and the shipped model's R-precision on real emoji (a small
set rendered here by the emoji builder from the installed sources)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import write_small_emoji_set

from t2i.evaluation.emoji_clip import (
    embed,
    emoji_clip_config,
    load_emoji_clip,
    load_images,
    load_rows,
    read_card,
    retrieval_scores,
    to_input,
)
from t2i.evaluation.metrics import clip_score, r_precision
from t2i.models.clip import CLIP


@pytest.fixture(scope="module")
def emoji64(tmp_path_factory) -> Path:
    """~150 real 64 px emoji of every installed style (about a second to render)."""
    return write_small_emoji_set(tmp_path_factory.mktemp("emoji64"), 64, 20, 0.2)


def test_to_input_box_averages_to_the_encoder_size(tmp_path):
    clip = CLIP(emoji_clip_config())
    x = torch.randn(2, 3, 64, 64)
    y = to_input(clip, x)
    assert y.shape == (2, 3, 32, 32)
    torch.testing.assert_close(y[1, 2, 5, 7], x[1, 2, 10:12, 14:16].mean())
    with pytest.raises(ValueError, match="multiple of 32"):
        to_input(clip, torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="split"):
        load_rows(tmp_path, "test")


def test_shipped_card_states_its_heldout_r_precision():
    card = read_card()
    assert card["heldout"]["r_precision_top1_of_100"] > 10 * card["chance_r_precision_top1"]
    assert card["heldout"]["clip_score_matched"] > card["heldout"]["clip_score_shuffled"]


def test_shipped_r_precision_of_real_emoji_is_far_above_chance(emoji64):
    from t2i.models.text_encoder import PretrainedTextEncoder

    # both splits: this set's held-out pairs are not emoji64's, so some were trained on
    rows = load_rows(emoji64, "train") + load_rows(emoji64, "heldout")
    captions = [r["text"] for r in rows]
    pooled = PretrainedTextEncoder().encode(captions).pooled
    images, clip = load_images(emoji64, rows), load_emoji_clip()
    img, txt = embed(clip, images, pooled)
    groups = np.unique(captions, return_inverse=True)[1]
    assert r_precision(img, txt, k=1, pool=100, groups=groups) > 0.1  # chance: 0.01
    assert clip_score(img, txt) > clip_score(img, torch.roll(txt, 1, dims=0))
    scores = retrieval_scores(clip, images, pooled, captions, pool=100)
    assert scores["n"] == len(rows) and scores["r_precision_top5_of_100"] > 0.3
    assert scores["clip_score_matched"] > scores["clip_score_shuffled"]
