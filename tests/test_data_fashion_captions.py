"""`fashion` captions as people type them (issue 36): names, plurals, frames, the held-out split."""

import re
from pathlib import Path

import numpy as np
import pytest

from t2i.data import load_dataset
from t2i.data.fashion import (
    CLASSES,
    DEFAULT_ROOT,
    HELDOUT_FRAMES,
    NAMES,
    TRAIN_FRAMES,
    UNSEEN_NAMES,
    FashionMNIST,
    fashion_captions,
    fashion_eval_prompts,
    fashion_unseen_prompts,
    varied_caption,
)

needs_data = pytest.mark.skipif(
    not Path(DEFAULT_ROOT).exists(), reason="needs Debian dataset-fashion-mnist (setup.sh --dev)"
)


def _pattern(frame: str) -> re.Pattern:
    return re.compile(re.escape(frame).replace(r"\{\}", "(.+)"))


def parses(caption: str, frames: tuple[str, ...], names: tuple[str, ...]) -> list[str]:
    """The names a caption is made of under `frames`: frame(article + name), case and end
    punctuation ignored; [] when no frame and name give it."""
    text = caption.lower().rstrip(".!")
    found = []
    for frame in frames:
        m = _pattern(frame).fullmatch(text)
        if m:
            phrase = re.sub(r"^(a|an|the) ", "", m.group(1))
            found += [phrase] if phrase in names else []
    return found


def all_names(label: int) -> tuple[str, ...]:
    return NAMES[label]["singular"] + NAMES[label]["plural"]


def train_captions(n: int = 3000, seed: int = 0) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(CLASSES), size=n)
    return [(varied_caption(int(c), rng), int(c)) for c in labels]


def test_train_and_heldout_frames_and_names_are_disjoint():
    assert not set(TRAIN_FRAMES) & set(HELDOUT_FRAMES)
    assert all("{}" in f for f in TRAIN_FRAMES + HELDOUT_FRAMES)
    seen = {n for c in NAMES for n in all_names(c)}
    assert not seen & {n for names in UNSEEN_NAMES.values() for n in names}


def test_training_captions_use_training_frames_and_their_class_names():
    caps = train_captions()
    for caption, label in caps:
        assert parses(caption, TRAIN_FRAMES, all_names(label)), caption
        for other in range(len(CLASSES)):  # no caption reads as another class
            if other != label:
                assert not parses(caption, TRAIN_FRAMES, all_names(other)), (caption, other)
        # no held-out frame gives this caption from any name (its words would then be seen)
        assert not parses(caption, HELDOUT_FRAMES, all_names(label)), caption
        assert not any(u in caption.lower() for u in UNSEEN_NAMES[label]), caption
    texts = [c for c, _ in caps]
    assert sum(c[0].isupper() for c in texts) > 0.2 * len(texts)  # case varies
    assert sum(c.endswith(".") for c in texts) > 0.1 * len(texts)  # and end punctuation
    for name in ("sandals", "pair of sandals", "jumper", "pants", "trainers", "purse", "tees"):
        assert any(name in c.lower() for c in texts), name  # plurals and synonyms are trained


def test_varied_caption_rejects_unknown_split():
    with pytest.raises(ValueError, match="heldout"):
        varied_caption(0, np.random.default_rng(0), "valid")


def test_eval_set_covers_every_class_in_plural_and_synonym_forms():
    prompts = fashion_eval_prompts()
    assert len({p.lower().rstrip(".!") for p, _, _ in prompts}) == len(prompts)  # no repeats
    for label in range(len(CLASSES)):
        own = [(p, k) for p, c, k in prompts if c == label]
        assert len(own) >= 20
        assert {k for _, k in own} == {"plural", "synonym"}
        for prompt, kind in own:
            names = parses(prompt, HELDOUT_FRAMES, all_names(label))
            assert names, prompt  # a held-out frame around one of the class's names
            assert not parses(prompt, TRAIN_FRAMES, all_names(label)), prompt
            if kind == "plural":
                assert set(names) <= set(NAMES[label]["plural"]), prompt
            else:  # a singular name other than the class's own
                assert set(names) <= set(NAMES[label]["singular"][1:]), prompt
        used = {n for p, _ in own for n in parses(p, HELDOUT_FRAMES, all_names(label))}
        assert used == set(NAMES[label]["plural"]) | set(NAMES[label]["singular"][1:])
    by_label = {c: " | ".join(p.lower() for p, cc, _ in prompts if cc == c) for c in range(10)}
    assert "sandals" in by_label[5] and "a pair of sandals" in by_label[5]
    assert "sneakers" in by_label[7] and "trainers" in by_label[7]
    assert "jumper" in by_label[2] and "pants" in by_label[1] and "handbag" in by_label[8]


def test_unseen_prompts_use_only_unseen_names():
    prompts = fashion_unseen_prompts(per_class=4)
    assert len(prompts) == 40 and {c for _, c in prompts} == set(range(10))
    for prompt, label in prompts:
        assert parses(prompt, HELDOUT_FRAMES, UNSEEN_NAMES[label]), prompt


def test_prompt_sets_are_fixed_by_seed():
    assert fashion_eval_prompts(seed=0) == fashion_eval_prompts(seed=0)
    assert fashion_eval_prompts(seed=0) != fashion_eval_prompts(seed=1)
    assert train_captions(50, seed=3) == train_captions(50, seed=3)
    assert train_captions(50, seed=3) != train_captions(50, seed=4)
    assert len(fashion_eval_prompts(per_kind=12)) == 10 * 2 * 12


@needs_data
def test_varied_dataset_keeps_images_and_canonical_default():
    canon, varied = FashionMNIST("test"), load_dataset("fashion:varied", split="test")
    assert load_dataset("fashion", split="test").captions == "canonical"
    assert varied.captions == "varied"
    n, kept = 300, 0
    for i in range(n):
        a, b = canon[i], varied[i]
        assert a["label"] == b["label"] and (a["image"] == b["image"]).all()
        assert a["caption"] in fashion_captions(a["label"])  # existing behaviour unchanged
        kept += b["caption"] == a["caption"]
        assert parses(b["caption"], TRAIN_FRAMES, all_names(b["label"])), b["caption"]
    assert 0.15 * n < kept < 0.6 * n  # CANONICAL_SHARE plus varied draws that land on one
    again = FashionMNIST("test", captions="varied")
    other = FashionMNIST("test", captions="varied", seed=1)
    caps = [varied[i]["caption"] for i in range(50)]
    assert caps == [again[i]["caption"] for i in range(50)]
    assert caps != [other[i]["caption"] for i in range(50)]
    with pytest.raises(ValueError, match="varied"):
        load_dataset("fashion:plain")
