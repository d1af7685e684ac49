"""Concepts `shapes` never trained on (teal, pink, diamond): rendered, captioned, parsed and judged
exactly, while the training world's data and judging stay as they were."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from t2i.data import shapes
from t2i.data.cell_judge import judge_cells
from t2i.data.judge import judge
from t2i.data.shapes_concepts import (
    CONCEPTS,
    concept_prompts,
    concept_scene,
    pair_prompts,
    write_concept_folder,
)
from t2i.images import shrink


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


def test_the_judge_is_exact_on_two_concepts_on_two_objects():
    rng = np.random.default_rng(11)
    for _ in range(60):
        scene = concept_scene(
            rng, ("pink", "diamond"), extra=bool(rng.random() < 0.5), together=False
        )
        assert {o.colour for o in scene.objects} & {"pink"}
        assert {o.shape for o in scene.objects} & {"diamond"}
        image = shapes.render_scene(scene, 64)
        assert judge(image, scene).ok, scene
        caption = shapes.make_caption(scene, rng)
        assert judge(image, caption).ok, caption


def test_pair_prompts_name_both_concepts_on_two_objects():
    prompts = pair_prompts(("pink", "diamond"), 40)
    assert prompts == pair_prompts(("pink", "diamond"), 40) and len(set(prompts)) > 30
    relations = 0
    for p in prompts:
        spec = shapes.parse_caption(p)
        assert len(spec.objects) == 2
        assert {o.colour for o in spec.objects} & {"pink"}, p
        assert {o.shape for o in spec.objects} & {"diamond"}, p
        relations += bool(spec.relations)
    assert relations > 0  # "a pink circle to the left of a red diamond"
    assert not set(prompts) & set(pair_prompts(("pink", "diamond"), 40, seed=2))
    with pytest.raises(ValueError, match="two different concepts"):
        pair_prompts(("teal", "teal"), 3)


@pytest.mark.parametrize("concepts", [("teal",), ("pink",), ("diamond",), ("teal", "diamond")])
def test_the_cell_judge_is_exact_on_layouts_of_the_concepts(concepts):
    rng = np.random.default_rng(5)
    for _ in range(40):
        scene = concept_scene(rng, concepts, extra=bool(rng.random() < 0.5), together=False)
        small = shrink(shapes.pil_to_tensor(shapes.render_scene(scene, 64))[None], (3, 3))[0]
        assert judge_cells(small, scene).ok, scene
        caption = shapes.make_caption(scene, rng)
        assert judge_cells(small, caption).ok, caption


LOOK_ALIKES = {
    "teal": ("green", "blue"),
    "pink": ("red", "purple"),
    "diamond": ("square", "circle"),
}


@pytest.mark.parametrize("concept", CONCEPTS)
def test_the_judges_tell_a_concept_from_its_training_look_alikes(concept):
    """A render of the concept fails a caption naming a look-alike instead, and the reverse. The
    cell judge reads a novel colour only when the caption names one, as the judge does, and has
    no "no colour" reading: a teal cell judged against "a green ..." is read as its nearest
    training colour, as any colour off the palette always was; the reverse is checked."""
    for look_alike in LOOK_ALIKES[concept]:
        for background in shapes.BACKGROUNDS:
            for size in shapes.SIZES:
                novel = shapes.Obj("triangle", concept, size, (1, 1))
                if concept in shapes.NOVEL_SHAPES:
                    novel = shapes.Obj(concept, "orange", size, (1, 1))
                field = "shape" if concept in shapes.NOVEL_SHAPES else "colour"
                known = replace(novel, **{field: look_alike})
                for drawn, named in ((novel, known), (known, novel)):
                    image = shapes.render_scene(shapes.Scene(background, (drawn,)), 64)
                    assert not judge(image, shapes.Scene(background, (named,))).ok, (drawn, named)
                if field == "colour":
                    image = shapes.render_scene(shapes.Scene(background, (known,)), 64)
                    small = shrink(shapes.pil_to_tensor(image)[None], (3, 3))[0]
                    verdict = judge_cells(small, shapes.Scene(background, (novel,)))
                    assert not verdict.ok, (known, novel)


def test_the_shapes_concept_command_writes_a_folder(tmp_path, capsys):
    from t2i.cli import main

    out = tmp_path / "pink"
    assert (
        main(["data", "shapes-concept", "--concept", "pink", "--count", "3", "--out", str(out)])
        == 0
    )
    assert sorted(p.name for p in out.iterdir())[:2] == ["pink-0000.png", "pink-0000.txt"]
    assert len(list(out.glob("*.txt"))) == 3 and "pink" in (out / "pink-0002.txt").read_text()
    assert f"--data {out}" in capsys.readouterr().out
    assert main(["data", "shapes-concept", "--concept", "violet", "--out", str(out)]) == 2
