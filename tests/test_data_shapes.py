"""`shapes`: determinism, the scene rules, the caption grammar, splits and evaluation prompts."""

import hashlib

import numpy as np
import pytest
import torch

from t2i.data import collate, load_dataset
from t2i.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    ShapesConfig,
    ShapesDataset,
    ShapesStream,
    heldout_prompts,
    make_caption,
    parse_caption,
    render_scene,
    sample_scene,
    scene_rng,
    shapes_eval_prompts,
)


def _scenes(n, split="train", seed=0, cfg=None):
    cfg = cfg or ShapesConfig(seed=seed)
    for i in range(n):
        rng = scene_rng(seed, split, i)
        scene = sample_scene(rng, cfg, split)
        yield scene, make_caption(scene, rng)


def test_item_is_a_function_of_seed_and_index():
    ds = ShapesDataset(length=50)
    a, b = ds[7], ds[7]
    assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]
    assert a["scene"] == b["scene"]
    assert a["scene"] != ds[8]["scene"]
    other = ShapesDataset(ShapesConfig(seed=1), length=50)[7]
    assert other["scene"] != a["scene"]
    stream = iter(ShapesStream(start=7))
    s7, s8 = next(stream), next(stream)
    assert s7["index"] == 7 and s7["caption"] == a["caption"] and s8["scene"] == ds[8]["scene"]


def test_item_format_and_flat_colours():
    item = ShapesDataset(length=5)[3]
    x = item["image"]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    # The interior of every object is exactly its named colour; the border is the background.
    rgb = np.asarray(render_scene(item["scene"], 64)).reshape(-1, 3)
    colours, counts = np.unique(rgb, axis=0, return_counts=True)
    named = {tuple(COLOURS[o.colour]) for o in item["scene"].objects}
    named.add(tuple(BACKGROUNDS[item["scene"].background]))
    top = {tuple(int(v) for v in c) for c in colours[np.argsort(counts)[-len(named) :]]}
    assert top == named


def test_scene_rules_hold():
    cfg = ShapesConfig()
    n_objects = set()
    for scene, _ in _scenes(1000):
        objs = scene.objects
        n_objects.add(len(objs))
        assert len({o.cell for o in objs}) == len(objs)
        assert len({(o.colour, o.shape) for o in objs}) == len(objs)
        assert not {(o.colour, o.shape) for o in objs} & set(cfg.holdout)
    assert n_objects == {1, 2, 3}


def test_holdout_split_always_holds_a_held_out_pair():
    cfg = ShapesConfig()
    for scene, _ in _scenes(300, split="holdout"):
        assert {(o.colour, o.shape) for o in scene.objects} & set(cfg.holdout)


def test_captions_parse_back_to_facts_of_their_scene():
    styles = set()
    for scene, caption in _scenes(2000, split="all"):
        spec = parse_caption(caption)
        assert [(o.colour, o.shape) for o in spec.objects] == [
            (o.colour, o.shape) for o in scene.objects
        ]
        for stated, true in zip(spec.objects, scene.objects):
            assert stated.size in (None, true.size) and stated.cell in (None, true.cell)
        for a, rel, b in spec.relations:
            ca, cb = scene.objects[a].cell, scene.objects[b].cell
            assert {
                "to the left of": ca[1] < cb[1],
                "to the right of": ca[1] > cb[1],
                "above": ca[0] < cb[0],
                "below": ca[0] > cb[0],
            }[rel]
        assert spec.background in (None, scene.background)
        assert spec.count == len(scene.objects)
        styles.add("rel" if spec.relations else "abs" if spec.objects[0].cell else "list")
    assert styles == {"rel", "abs", "list"}


@pytest.mark.parametrize("bad", ["a red dog", "a red circle next to a blue square", "hello"])
def test_parse_rejects_captions_outside_the_grammar(bad):
    with pytest.raises(ValueError, match="grammar"):
        parse_caption(bad)


def test_eval_prompts_are_fixed_and_parse():
    a, b = shapes_eval_prompts(50), shapes_eval_prompts(50)
    assert a == b and len(set(a)) > 40
    held = set(ShapesConfig().holdout)
    for p in a:
        assert not {(o.colour, o.shape) for o in parse_caption(p).objects} & held
    for p in heldout_prompts(50):
        assert {(o.colour, o.shape) for o in parse_caption(p).objects} & held


def test_load_dataset_names_and_errors(tmp_path):
    ds = load_dataset("shapes:single", image_size=48, length=10, seed=3)
    assert len(ds) == 10 and ds[0]["image"].shape == (3, 48, 48)
    assert all(len(ds[i]["scene"].objects) == 1 for i in range(10))
    crowded = load_dataset("shapes:crowded", length=60, seed=3)
    assert {len(crowded[i]["scene"].objects) for i in range(60)} == {2, 3}
    three = load_dataset("shapes:three", length=20, seed=3)
    assert {len(three[i]["scene"].objects) for i in range(20)} == {3}
    with pytest.raises(ValueError, match=r"min_objects=3; choose from 1..max_objects \(2\)"):
        ShapesConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="fashion"):
        load_dataset("shapez")
    with pytest.raises(ValueError, match="single"):
        load_dataset("shapes:nope")
    with pytest.raises(ValueError, match="holdout"):
        ShapesDataset(split="valid")
    batch = collate([ds[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 48, 48) and len(batch["scene"]) == 3


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(((item["image"] + 1) * 127.5).round().byte().numpy().tobytes())
        h.update(item["caption"].encode())
    return h.hexdigest()[:16]


def test_the_default_data_is_what_it_was_before_the_novel_concepts():
    """Recorded with t2i/data/shapes.py as of dc72e0d, before teal, pink and diamond existed: the
    training world's items, renders and prompts must not move when concepts are added."""
    ds = ShapesDataset(length=200)
    pinned = {
        0: (
            "a red circle, a purple star and a yellow star on a grey background",
            "5231ad5fc64d82ac",
        ),
        123: ("one shape: a large yellow heart on a black background", "6fc98d505f003e4c"),
    }
    for i, (caption, image_hash) in pinned.items():
        item = ds[i]
        rgb = np.asarray(render_scene(item["scene"], 64))
        assert item["caption"] == caption
        assert hashlib.sha256(rgb.tobytes()).hexdigest()[:16] == image_hash
    assert _digest(ds[i] for i in range(200)) == "9f8ea6bec7d59fcc"
    assert _digest(ShapesDataset(length=50, split="holdout")[i] for i in range(50)) == (
        "e5ab691f1b022d24"
    )
    prompts = "\n".join(shapes_eval_prompts(200) + heldout_prompts(100))
    assert hashlib.sha256(prompts.encode()).hexdigest()[:16] == "5a07611b901cca9f"
    assert shapes_eval_prompts(1) == ["a large yellow triangle at the bottom on a grey background"]
