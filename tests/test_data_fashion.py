"""`fashion`: Fashion-MNIST from the Debian package (dataset-fashion-mnist), with captions."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from t2i.data import load_dataset
from t2i.data.fashion import CLASSES, DEFAULT_ROOT, FashionMNIST, fashion_captions, read_idx

pytestmark = pytest.mark.skipif(
    not Path(DEFAULT_ROOT).exists(), reason="needs Debian dataset-fashion-mnist (setup.sh --dev)"
)


@pytest.fixture(scope="module")
def train():
    return FashionMNIST("train")


def test_sizes_and_balanced_classes(train):
    test = FashionMNIST("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert int(train.labels[0]) == 9  # the first training image is an ankle boot


def test_items_padded_to_32_and_at_28(train):
    item = train[0]
    x = item["image"]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0.5
    assert torch.all(x[:, :2] == -1) and torch.all(x[:, :, -2:] == -1)  # the black padding
    x28 = FashionMNIST("train", image_size=28)[0]["image"]
    assert x28.shape == (1, 28, 28) and torch.equal(x28, x[:, 2:30, 2:30])
    assert FashionMNIST("test", image_size=64)[0]["image"].shape == (1, 64, 64)


def test_captions_name_the_class(train):
    seen = set()
    for i in range(200):
        item = train[i]
        assert item["caption"] in fashion_captions(item["label"])
        assert CLASSES[item["label"]] in item["caption"]
        seen.add(item["caption"].split(CLASSES[item["label"]])[0])
    assert len(seen) >= 4  # several templates are used
    assert "an ankle boot" in fashion_captions(9) and "a photo of a sneaker" in fashion_captions(7)
    assert train[5]["caption"] == FashionMNIST("train")[5]["caption"]  # fixed by (seed, index)


def test_load_dataset_and_bad_files(tmp_path):
    assert len(load_dataset("fashion", split="test")) == 10000
    with pytest.raises(ValueError, match="train"):
        FashionMNIST("valid")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        FashionMNIST("test", root=str(tmp_path))
    # A truncated copy of the labels file is an error, not a short data set.
    src = Path(DEFAULT_ROOT) / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(src) as f:
        data = f.read()
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write(data[:5000])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)
    shutil.copy(Path(DEFAULT_ROOT) / "t10k-images-idx3-ubyte.gz", tmp_path)
    with pytest.raises(ValueError, match="truncated"):
        FashionMNIST("test", root=str(tmp_path))
