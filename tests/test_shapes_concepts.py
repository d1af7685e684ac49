"""Concepts `shapes` never trained on (teal, pink, diamond): rendered, captioned, parsed and judged
exactly, while the training world's data and judging stay as they were."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from t2i.data import shapes
from t2i.data.judge import judge
from t2i.data.shapes_concepts import (
    CONCEPTS,
    concept_prompts,
    concept_scene,
    write_concept_folder,
)


def test_novel_colours_are_far_from_every_colour_and_background():
    others = {**shapes.COLOURS, **shapes.BACKGROUNDS}
    for name, rgb in shapes.NOVEL_COLOURS.items():
        for other, orgb in {**others, **shapes.NOVEL_COLOURS}.items():
            if other != name:
                assert np.linalg.norm(np.subtract(rgb, orgb)) >= 95, (name, other)


def test_training_data_never_holds_a_novel_concept():
    data = shapes.ShapesDataset(shapes.ShapesConfig(), length=300)
    for i in range(300):
        for o in data[i]["scene"].objects:
            assert o.colour in shapes.COLOURS and o.shape in shapes.SHAPES


@pytest.mark.parametrize("concepts", [(c,) for c in CONCEPTS] + [("teal", "diamond")])
def test_the_judge_is_exact_on_renders_of_the_concepts(concepts):
    rng = np.random.default_rng(7)
    for _ in range(60):
        scene = concept_scene(rng, concepts, extra=bool(rng.random() < 0.5))
        image = shapes.render_scene(scene, 64)
        verdict = judge(image, scene)
        assert verdict.ok, (scene, [f for f in verdict.facts if not f[2]])
        caption = shapes.make_caption(scene, rng)
        assert judge(image, caption).ok, caption


def test_a_concept_folder_is_a_users_folder_of_captioned_images(tmp_path):
    from t2i.data import load_dataset

    folder = write_concept_folder(tmp_path / "teal", "teal", count=12)
    data = load_dataset(str(folder), image_size=64)
    assert len(data) == 12
    captions = [data[i]["caption"] for i in range(12)]
    assert all("teal" in c for c in captions)
    image = Image.open(folder / "teal-0000.png")
    assert judge(image, (folder / "teal-0000.txt").read_text().strip()).ok
    prompts = concept_prompts("teal", 20)
    assert len(prompts) == 20 and all("teal" in p for p in prompts)
    both = concept_prompts(("teal", "diamond"), 10)
    assert all("teal diamond" in p for p in both)
    with pytest.raises(ValueError, match="unknown concept 'violet'"):
        write_concept_folder(tmp_path / "x", "violet")


def test_a_caption_without_novel_words_is_judged_as_before():
    """The judge reads novel colours only when the caption names one: a pink object in an image
    judged against a training caption is not an object of any named colour."""
    scene = shapes.Scene(
        "white",
        (
            shapes.Obj("circle", "red", "large", (0, 0)),
            shapes.Obj("square", "pink", "large", (2, 2)),
        ),
    )
    image = shapes.render_scene(scene, 64)
    assert judge(image, "one shape: a large red circle").ok  # pink is not read as a colour
    both = [judge(image, c).ok for c in ("a red circle", "a red circle and a pink square")]
    assert both == [True, True]
