"""Captions as people type them (t2i/data/shapes_phrasing.py): held-out frames never appear in
training, their words all do, and every paraphrase's Spec holds on the scene it came from."""

from __future__ import annotations

import pytest

from t2i.data import load_dataset
from t2i.data import shapes_phrasing as sp
from t2i.data.judge import judge
from t2i.data.shapes import Obj, ObjSpec, Scene, Spec, render_scene
from t2i.models.text_encoder import words

TABLES = [
    sp.SENTENCE_FRAMES,
    sp.BACKGROUND_FRAMES,
    sp.OBJECT_FRAMES,
    sp.OBJECT_FRAMES_NO_SIZE,
    sp.PLACE_FRAMES,
    sp.RELATION_FRAMES,
    sp.COUNT_FRAMES,
]


@pytest.fixture(scope="module")
def training_captions() -> list[str]:
    data = load_dataset("shapes:varied", split="train", length=3000)
    return [data[i]["caption"] for i in range(len(data))]


def test_frames_of_training_and_evaluation_are_disjoint():
    for table in TABLES:
        assert set(table["train"]).isdisjoint(table["heldout"]), table


def test_no_evaluation_paraphrase_is_a_training_caption_but_all_its_words_are_known(
    training_captions,
):
    evaluation = sp.paraphrase_prompts(300) + sp.paraphrase_prompts(100, split="holdout")
    evaluation += sp.paraphrase_prompts(300, phrasing="heldout")
    seen = set(training_captions)
    assert not [p.text for p in evaluation if p.text in seen]
    known = {w for c in training_captions for w in words(c)}
    unknown = {w for p in evaluation for w in words(p.text)} - known
    assert not unknown, unknown


def test_paraphrases_are_mostly_outside_the_canonical_grammar(training_captions):
    evaluation = [p.text for p in sp.paraphrase_prompts(300)]
    assert sum(map(sp.in_grammar, evaluation)) < 0.05 * len(evaluation)
    # training keeps the canonical grammar for about a quarter of its captions
    share = sum(map(sp.in_grammar, training_captions)) / len(training_captions)
    assert 0.12 < share < 0.3, share


def test_every_paraphrase_holds_on_its_own_scene_and_fails_on_another():
    items = sp.paraphrase_prompts(200) + sp.paraphrase_prompts(100, split="holdout")
    items += sp.paraphrase_prompts(100, phrasing="heldout")
    for p in items:
        verdict = judge(render_scene(p.scene), p.spec)
        assert verdict.ok, (p.text, [f for f in verdict.facts if not f[2]])
    wrong = [judge(render_scene(b.scene), a.spec).ok for a, b in zip(items, items[1:])]
    assert sum(wrong) < 0.1 * len(wrong)


def test_the_set_covers_plurals_relations_synonyms_and_is_fixed():
    items = sp.paraphrase_prompts(300)
    assert [p.text for p in items] == [p.text for p in sp.paraphrase_prompts(300)]
    assert sum(sp.kind_of(p.spec) == "repeated object" for p in items) >= 30
    assert sum(bool(p.spec.relations) for p in items) >= 30
    text = " ".join(p.text.lower() for p in items)
    for word in ("violet", "gray", "tiny", "center", "beneath", "two", "disc"):
        assert f"{word} " in text or f"{word}," in text, word


def test_two_of_an_object_need_two_in_the_image():
    one = Scene("white", (Obj("circle", "red", "large", (0, 0)),))
    two = Scene("white", (*one.objects, Obj("circle", "red", "large", (2, 2))))
    spec = Spec([ObjSpec("circle", "red"), ObjSpec("circle", "red")], count=2)
    assert judge(render_scene(two), spec).ok
    facts = judge(render_scene(one), Spec([ObjSpec("circle", "red")] * 2)).facts
    assert not [f for f in facts if f[0] == "binding"][0][2]


def test_new_sentences_keep_training_phrases_and_every_level_changes_them():
    sentences = [p.text.lower() for p in sp.paraphrase_prompts(200)]
    levels = [p.text.lower() for p in sp.paraphrase_prompts(200, phrasing="heldout")]
    # "that is {colour}" is a held-out object frame; "sits" a held-out relation frame's word
    assert not [t for t in sentences if "that sits" in t]
    assert sum("that sits" in t for t in levels) >= 5
    with pytest.raises(ValueError, match="use held-out frames"):
        sp.paraphrase_prompts(5, phrasing="train")


def test_an_unknown_phrasing_split_is_refused():
    with pytest.raises(ValueError, match="unknown phrasing split 'test'; choose from"):
        sp.phrase_scene(Scene("white", (Obj("circle", "red", "large", (0, 0)),)), None, "test")
