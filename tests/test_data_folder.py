"""A user's folder (name.png + name.txt, or metadata.jsonl), transforms, and the bad-data rules."""

import json
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.data import load_dataset
from t2i.data.folder import BadImageError, ImageFolder
from t2i.data.transforms import TransformConfig, apply, to_mode


def _image(seed, size=(40, 30), mode="RGB"):
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(a).convert(mode)


def make_folder(root, n=4, captions=True):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _image(i).save(root / f"img{i}.png")
        if captions:
            (root / f"img{i}.txt").write_text(f"caption {i}\n")
    return root


def test_png_and_txt_pairs(tmp_path):
    ds = ImageFolder(make_folder(tmp_path / "d"), TransformConfig(size=16))
    assert len(ds) == 4 and ds.skipped == []
    item = ds[2]
    assert item["caption"] == "caption 2" and item["path"].endswith("img2.png")
    x = item["image"]
    assert x.shape == (3, 16, 16) and -1 <= x.min() <= x.max() <= 1


def test_metadata_jsonl(tmp_path):
    root = make_folder(tmp_path / "d", n=3, captions=False)
    (root / "sub").mkdir()
    _image(9).save(root / "sub" / "x.jpg")
    rows = [{"file_name": f"img{i}.png", "text": f"meta {i}"} for i in range(3)]
    rows.append({"file_name": "sub/x.jpg", "text": "nested"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_dataset(str(root), image_size=8)
    assert [c for _, c in ds.items] == ["meta 0", "meta 1", "meta 2", "nested"]
    rows.pop()
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match="sub/x.jpg"):
        ImageFolder(root)


def test_missing_caption_lists_the_first_files(tmp_path):
    root = make_folder(tmp_path / "d", n=8)
    for i in (1, 5, 6):
        (root / f"img{i}.txt").unlink()
    with pytest.raises(ValueError, match="3 of 8") as err:
        ImageFolder(root)
    assert "img1.png" in str(err.value) and "img6.png" in str(err.value)


def test_empty_folder_says_where_it_looked(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")


def _corrupt(root):
    data = (root / "img1.png").read_bytes()
    (root / "img1.png").write_bytes(data[: len(data) // 2])  # truncated
    (root / "img3.png").write_bytes(b"not an image at all")


def test_bad_images_are_skipped_counted_or_fatal(tmp_path):
    root = make_folder(tmp_path / "d", n=5)
    _corrupt(root)
    with pytest.warns(UserWarning) as record:
        ds = ImageFolder(root)
    messages = [str(w.message) for w in record]
    assert len(messages) == 3 and "skipped 2 unreadable of 5" in messages[-1]
    assert len(ds) == 3 and sorted(ds.skipped) == [str(root / "img1.png"), str(root / "img3.png")]
    assert [ds[i]["caption"] for i in range(3)] == ["caption 0", "caption 2", "caption 4"]
    with pytest.raises(BadImageError, match="img1.png"):
        ImageFolder(root, strict=True)
    # Broken after the check: skipped at load time too, with a warning.
    ds = ImageFolder(make_folder(tmp_path / "e", n=3))
    (tmp_path / "e" / "img0.png").write_bytes(b"gone")
    with pytest.warns(UserWarning, match="img0.png"):
        assert ds[0]["caption"] == "caption 1"
    assert ds.skipped == [str(tmp_path / "e" / "img0.png")]


def test_modes_are_converted_alpha_on_the_stated_background():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = np.asarray(to_mode(rgba, 3, (10, 20, 30)))
    assert tuple(out[1, 1]) == (10, 20, 30) and tuple(out[0, 0]) == (0, 0, 255)
    pal = _image(1).convert("P", palette=Image.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    assert to_mode(pal).mode == "RGB"
    grey = apply(_image(2).convert("L"), TransformConfig(size=8))
    assert grey.shape == (3, 8, 8) and torch.equal(grey[0], grey[1])
    assert apply(_image(2), TransformConfig(size=8, channels=1)).shape == (1, 8, 8)
    la = Image.new("LA", (4, 4), (200, 0))
    assert tuple(np.asarray(to_mode(la, 3, (0, 0, 0)))[0, 0]) == (0, 0, 0)


def test_resize_crops_and_flip():
    img = _image(3, size=(60, 30))  # wide
    centre = apply(img, TransformConfig(size=30, crop="center"))
    assert torch.equal(centre, apply(img.crop((15, 0, 45, 30)), TransformConfig(size=30)))
    a = apply(img, TransformConfig(size=30, crop="random"), random.Random(1))
    b = apply(img, TransformConfig(size=30, crop="random"), random.Random(1))
    crops = {
        apply(img, TransformConfig(size=30, crop="random"), random.Random(s)).sum().item()
        for s in range(10)
    }
    assert torch.equal(a, b) and len(crops) > 1
    # Flip is off by default: the left half stays on the left.
    default = [apply(img, TransformConfig(size=30), random.Random(s)) for s in range(5)]
    assert all(torch.equal(d, centre) for d in default)
    flips = [apply(img, TransformConfig(size=30, hflip=True), random.Random(s)) for s in range(20)]
    assert any(torch.equal(f, centre.flip(-1)) for f in flips)
    with pytest.raises(ValueError, match="center"):
        TransformConfig(crop="middle")


def test_no_warnings_on_clean_data(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageFolder(make_folder(tmp_path / "d"))[0]


def test_metadata_split_keeps_only_the_requested_rows(tmp_path):
    rows = [("a.png", "train"), ("b.png", "heldout"), ("c.png", None)]
    lines = []
    for name, split in rows:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name)
        row = {"file_name": name, "text": f"caption {name}"}
        if split:
            row["split"] = split
        lines.append(json.dumps(row))
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines))
    names = lambda ds: sorted(p.name for p, _ in ds.items)  # noqa: E731
    assert names(ImageFolder(tmp_path, split="train")) == ["a.png", "c.png"]
    assert names(ImageFolder(tmp_path, split="heldout")) == ["b.png", "c.png"]
    assert names(ImageFolder(tmp_path)) == ["a.png", "b.png", "c.png"]
