"""Tar shards: `t2i data pack` writes them, ShardDataset reads them split over ranks and workers."""

import argparse
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from t2i.data import collate, load_dataset
from t2i.data import shards as shards_mod
from t2i.data.cli import add_parser
from t2i.data.folder import BadImageError, ImageFolder
from t2i.data.shards import ShardDataset, expand_pattern, pack_folder, write_shards
from t2i.data.transforms import TransformConfig


def make_folder(root, n=4):
    root.mkdir(parents=True)
    for i in range(n):
        a = np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(a).save(root / f"img{i}.png")
        (root / f"img{i}.txt").write_text(f"caption {i}\n")
    return root


@pytest.fixture()
def packed(tmp_path):
    src = make_folder(tmp_path / "src", n=10)
    paths, n, skipped = pack_folder(src, tmp_path / "shards", shard_size=3)
    return src, paths, n, skipped


def test_pack_then_read_gives_the_folder_items(packed):
    src, paths, n, skipped = packed
    assert [p.name for p in paths] == [f"train-{i:06d}.tar" for i in range(4)]
    assert n == 10 and skipped == []
    cfg = TransformConfig(size=16)
    folder = ImageFolder(src, cfg)
    items = list(ShardDataset([str(p) for p in paths], cfg))
    assert [it["caption"] for it in items] == [folder[i]["caption"] for i in range(10)]
    for i, it in enumerate(items):
        assert torch.equal(it["image"], folder[i]["image"])
    with tarfile.open(paths[0]) as tar:  # WebDataset layout: key.png + key.txt, sorted by key
        assert tar.getnames() == [f"{k:08d}.{e}" for k in range(3) for e in ("png", "txt")]


def test_patterns_brace_and_glob(packed):
    _, paths, _, _ = packed
    d = paths[0].parent
    assert expand_pattern(f"{d}/train-{{000000..000003}}.tar") == [str(p) for p in paths]
    assert expand_pattern(f"{d}/*.tar") == [str(p) for p in paths]
    with pytest.raises(FileNotFoundError, match="missing"):
        expand_pattern(f"{d}/train-{{000000..000009}}.tar")
    with pytest.raises(FileNotFoundError, match="no tar shards"):
        expand_pattern(f"{d}/nothing-*.tar")
    ds = load_dataset(f"{d}/train-{{000000..000003}}.tar", image_size=8)
    assert len(list(ds)) == 10


def _keys(loader):
    return [k for batch in loader for k in batch["key"]]


def test_workers_and_ranks_read_disjoint_shards(packed, monkeypatch):
    _, paths, _, _ = packed
    ds = ShardDataset([str(p) for p in paths], TransformConfig(size=8))
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    keys = _keys(loader)
    assert sorted(keys) == [f"{k:08d}" for k in range(10)]  # each sample exactly once
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(shards_mod, "_rank_world", lambda r=rank: (r, 2))
        per_rank.append([it["key"] for it in ds])
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(keys)
    monkeypatch.setattr(shards_mod, "_rank_world", lambda: (0, 8))
    with pytest.raises(ValueError, match="at least 8 shards"):
        list(ds)


def test_shuffle_is_seeded_and_complete(packed):
    _, paths, _, _ = packed
    mk = lambda seed: ShardDataset(  # noqa: E731
        [str(p) for p in paths], TransformConfig(size=8), shuffle=True, buffer=4, seed=seed
    )
    a, b, c = ([it["key"] for it in mk(s)] for s in (0, 0, 1))
    assert a == b and sorted(a) == sorted(c) and len(set(a)) == 10 and a != c


def test_bad_images_in_shards(tmp_path):
    good = (make_folder(tmp_path / "src", n=1) / "img0.png").read_bytes()
    samples = [
        ("a", good, ".png", "fine"),
        ("b", good[:40], ".png", "truncated"),
        ("c", good, ".png", "fine too"),
    ]
    paths = write_shards(samples, tmp_path / "s", shard_size=10)
    with pytest.warns(UserWarning, match="b"):
        ds = ShardDataset([str(p) for p in paths], TransformConfig(size=8))
        assert [it["caption"] for it in ds] == ["fine", "fine too"]
    assert ds.skipped == ["b"]
    with pytest.raises(BadImageError):
        list(ShardDataset([str(p) for p in paths], TransformConfig(size=8), strict=True))
    with pytest.raises(ValueError, match="dot"):
        write_shards([("a.b", good, ".png", "x")], tmp_path / "t")


def test_pack_skips_unreadable_and_cli(tmp_path, capsys):
    src = make_folder(tmp_path / "src", n=4)
    (src / "img2.png").write_bytes(b"broken")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["pack", str(src), str(tmp_path / "out"), "--shard-size", "2"])
    with pytest.warns(UserWarning, match="img2.png"):
        assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "packed 3 samples into 2 shards" in out and "skipped 1" in out
    assert len(list(load_dataset(str(tmp_path / "out" / "*.tar"), image_size=8))) == 3
    args = parser.parse_args(["pack", str(src), str(tmp_path / "o2"), "--strict"])
    with pytest.raises(BadImageError):
        args.func(args)
    args = parser.parse_args(["preview", "shapes", "--n", "5", "--out", str(tmp_path / "p.png")])
    assert args.func(args) == 0
    assert (tmp_path / "p.txt").read_text().count("\n") == 5
