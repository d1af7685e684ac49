"""The 3x3 layout judge: right on the data's scenes shrunk to one pixel per cell, not fooled."""

from dataclasses import replace

import pytest
import torch

from t2i.data.cell_judge import coverage, judge_cells
from t2i.data.shapes import (
    GRID,
    SHAPES,
    Scene,
    ShapesConfig,
    make_caption,
    pil_to_tensor,
    recolour,
    render_scene,
    sample_scene,
    scene_rng,
)
from t2i.images import shrink

N = 300


def layout(scene: Scene) -> torch.Tensor:
    """The scene as a cascade's upscaler sees it: the 64 px render shrunk to 3x3 by area."""
    return shrink(pil_to_tensor(render_scene(scene, 64))[None], (GRID, GRID))[0]


@pytest.fixture(scope="module")
def scenes():
    cfg, out = ShapesConfig(), []
    for i in range(N):
        rng = scene_rng(7, "all", i)
        scene = sample_scene(rng, cfg, "all")
        out.append((scene, make_caption(scene, rng)))
    return out


def test_true_layouts_pass_every_fact_by_caption_and_by_scene(scenes):
    for scene, caption in scenes:
        small = layout(scene)
        assert judge_cells(small, caption).ok, caption
        assert judge_cells(small, scene).ok, caption


def test_each_size_covers_more_of_its_cell_than_the_small_one():
    for shape in SHAPES:
        assert 0.1 < coverage(shape, "small") < coverage(shape, "large") < 0.9


def test_a_moved_recoloured_resized_dropped_or_repainted_object_fails_its_fact(scenes):
    scene = next(s for s, _ in scenes if len(s.objects) == 3)
    first = scene.objects[0]
    free = next(
        (r, c)
        for r in range(GRID)
        for c in range(GRID)
        if (r, c) not in {o.cell for o in scene.objects}
    )
    other = "small" if first.size == "large" else "large"
    colour = next(c for c in ("red", "green", "blue") if c not in {o.colour for o in scene.objects})
    background = "white" if scene.background != "white" else "black"
    cases = {
        "position": replace(scene, objects=(replace(first, cell=free), *scene.objects[1:])),
        "size": replace(scene, objects=(replace(first, size=other), *scene.objects[1:])),
        "colour": recolour(scene, {first.colour: colour}),
        "count": replace(scene, objects=scene.objects[1:]),
        "background": replace(scene, background=background),
    }
    for category, changed in cases.items():
        verdict = judge_cells(layout(changed), scene)
        failed = {cat for cat, _, holds in verdict.facts if not holds}
        assert category in failed, (category, verdict.facts)


def test_an_image_that_is_not_3x3_is_refused_with_its_size():
    with pytest.raises(ValueError, match="needs 3x3 images, got 8x8"):
        judge_cells(torch.zeros(3, 8, 8), "a red circle")
