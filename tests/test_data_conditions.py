"""Condition images (t2i/data/conditions.py) and the fidelity measures of controls."""

from __future__ import annotations

import pytest
import torch

from t2i.data import conditions as c
from t2i.data.shapes import ShapesDataset


@pytest.fixture(scope="module")
def items():
    data = ShapesDataset(length=12)
    return [data[i] for i in range(12)]


def test_edges_are_a_thin_grey_map_of_the_outlines(items):
    for item in items:
        e = c.edges(item["image"])
        assert e.shape == (1, 64, 64) and set(e.unique().tolist()) <= {0.0, 1.0}
        inside = c.layout(item["scene"], 64)[0] > 0.99  # deep inside the objects: flat colour
        inside = -torch.nn.functional.max_pool2d(-inside.float()[None], 5, 1, 2)[0] > 0.5
        assert e[0][inside].sum() == 0 and e.sum() > 10


def test_a_sketch_is_the_edges_bent_and_broken_the_same_for_a_seed(items):
    image = items[0]["image"]
    edges, a, b = c.edges(image), c.sketch(image, 1), c.sketch(image, 2)
    assert torch.equal(a, c.sketch(image, 1)) and not torch.equal(a, b)
    # not the same pixels, but the same lines give or take two pixels
    assert c.edge_f1(a, edges, tolerance=0) < 0.95 and c.edge_f1(a, edges, tolerance=2) > 0.9


def test_edge_f1_counts_pixels_within_the_tolerance():
    wanted = torch.zeros(1, 16, 16)
    wanted[0, 8, 2:14] = 1
    assert c.edge_f1(wanted, wanted) == 1.0
    shifted = torch.roll(wanted, 1, dims=1)
    assert c.edge_f1(shifted, wanted) == 1.0 and c.edge_f1(shifted, wanted, tolerance=0) == 0.0
    assert c.edge_f1(torch.roll(wanted, 4, dims=1), wanted) == 0.0
    half = wanted.clone()
    half[0, 8, 8:] = 0
    assert c.edge_f1(half, wanted) == pytest.approx(14 / 19)  # recall 7/12: one within 1 px
    assert c.edge_f1(torch.zeros(16, 16), torch.zeros(16, 16)) == 1.0


def test_the_real_images_layout_is_found_again(items):
    for item in items:
        per_object, whole = c.layout_iou(item["image"], item["scene"])
        assert per_object > 0.85 and whole > 0.85, (per_object, whole)
    other = items[1]["scene"]
    assert c.layout_iou(items[0]["image"], other)[1] < 0.5


def test_layout_needs_scenes_and_kinds_are_checked(items):
    with pytest.raises(ValueError, match="only the shapes data"):
        c.condition("layout", {"image": items[0]["image"]})
    with pytest.raises(ValueError, match="choose from"):
        c.condition("depth", items[0])
