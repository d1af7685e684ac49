"""Balanced drawing by metadata groups: the groups, the view's counts, the recipe's errors."""

import argparse
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from t2i.data.balance import GroupBalanced, folder_groups, metadata_groups
from t2i.data.folder import ImageFolder
from t2i.data.transforms import TransformConfig
from t2i.training import diffusion

# (name, style) per image: "a" in style x has a base and two tones, everything else is alone.
ROWS = [("a", "x"), ("a", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("c", "x")]


def emoji_like_folder(root, rows=ROWS, drop_field=None):
    root.mkdir(parents=True)
    lines = []
    for i, (name, style) in enumerate(rows):
        colour = np.full((8, 8, 3), 40 * i, dtype=np.uint8)
        Image.fromarray(colour).save(root / f"{i}.png")
        row = {"file_name": f"{i}.png", "text": f"{name} {style} {i}", "name": name, "style": style}
        if i == drop_field:
            del row["style"]
        lines.append(json.dumps(row))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return ImageFolder(root, TransformConfig(size=8))


def test_groups_follow_the_fields_in_the_folders_order(tmp_path):
    folder = emoji_like_folder(tmp_path / "d")
    assert metadata_groups(folder, ("name", "style")) == [0, 0, 0, 1, 2, 3]
    assert metadata_groups(folder, ("name",)) == [0, 0, 0, 0, 1, 2]
    assert folder_groups(folder, ()) is None


def test_every_group_is_drawn_equally_and_cycles_its_members(tmp_path):
    folder = emoji_like_folder(tmp_path / "d")
    view = GroupBalanced(folder, metadata_groups(folder, ("name", "style")))
    assert (len(view.members), view.repeats, len(view)) == (4, 3, 12)
    drawn = Counter(view[j]["caption"] for j in range(len(view)))
    assert drawn == {"a x 0": 1, "a x 1": 1, "a x 2": 1, "a y 3": 3, "b x 4": 3, "c x 5": 3}
    with pytest.raises(IndexError, match="index 12 outside a view of 12"):
        view[12]


def test_a_missing_field_names_the_line_and_the_field(tmp_path):
    folder = emoji_like_folder(tmp_path / "d", drop_field=4)
    with pytest.raises(ValueError, match="line 5 has no field 'style'"):
        metadata_groups(folder, ("name", "style"))
    with pytest.raises(ValueError, match="no field 'colour'"):
        metadata_groups(folder, ("colour",))


def test_a_folder_without_metadata_or_a_built_in_set_is_refused(tmp_path):
    root = tmp_path / "txt"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "0.png")
    (root / "0.txt").write_text("a caption")
    folder = ImageFolder(root, TransformConfig(size=8))
    with pytest.raises(ValueError, match="has no metadata.jsonl to group by"):
        folder_groups(folder, ("name",))
    cfg = diffusion.preset("tiny")
    cfg.balance = ("name",)
    with pytest.raises(ValueError, match="groups an image folder's metadata.jsonl rows"):
        diffusion.build(cfg, argparse.Namespace(data="shapes"))


def test_the_recipe_trains_on_the_balanced_view(tmp_path):
    emoji_like_folder(tmp_path / "d")
    cfg = diffusion.preset("tiny")
    cfg.image_size, cfg.balance = 8, ("name", "style")
    recipe = diffusion.build(cfg, argparse.Namespace(data=str(tmp_path / "d")))
    assert isinstance(recipe.dataset, GroupBalanced) and len(recipe.dataset) == 12


def test_groups_come_from_the_rows_the_folder_read(tmp_path):
    """The folder keeps metadata.jsonl's rows (with their line numbers) when it scans, so grouping
    does not read the file a second time: a file changed after the scan does not move the groups."""
    folder = emoji_like_folder(tmp_path / "d")
    line, row = folder.metadata["4.png"]
    assert (line, row["name"], row["style"]) == (5, "b", "x")
    (tmp_path / "d" / "metadata.jsonl").write_text("not json\n")
    assert metadata_groups(folder, ("name", "style")) == [0, 0, 0, 1, 2, 3]
