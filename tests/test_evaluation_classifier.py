"""The Fashion-MNIST feature extractor: its folder and the shipped weights (its training:
tests/test_training_classifier.py)."""

import json

import numpy as np
import pytest
import torch

from t2i.data.fashion import FashionMNIST
from t2i.evaluation.classifier import (
    BUNDLED_DIR,
    ClassifierConfig,
    FashionClassifier,
    fashion_tensors,
    load_classifier,
    read_card,
    save_classifier,
)
from t2i.evaluation.features import extract_features
from t2i.evaluation.metrics import frechet_distance, prompt_accuracy


@pytest.fixture(scope="module")
def test_split():
    return fashion_tensors("test")


def test_fashion_tensors_match_the_data_layer_items(test_split):
    images, labels = test_split
    ds = FashionMNIST("test", image_size=32)
    assert images.shape == (10_000, 1, 32, 32) and labels.shape == (10_000,)
    for i in (0, 4321):
        assert torch.equal(images[i], ds[i]["image"]) and labels[i] == ds[i]["label"]


def test_shapes_and_bad_input():
    model = FashionClassifier(ClassifierConfig.preset("tiny"))
    x = torch.randn(3, 1, 32, 32)
    assert model.features(x).shape == (3, 16) and model(x).shape == (3, 10)
    with pytest.raises(ValueError, match="32, 32"):
        model(torch.randn(3, 3, 32, 32))
    with pytest.raises(ValueError, match="preset"):
        ClassifierConfig.preset("huge")


def test_folder_round_trip_is_the_fp16_model(tmp_path):
    torch.manual_seed(0)
    model = FashionClassifier(ClassifierConfig.preset("tiny")).eval()
    save_classifier(model, tmp_path, {"test_accuracy": 0.5})
    loaded = load_classifier(tmp_path)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.half().float())  # what the fp16 file holds
    x = torch.randn(4, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert read_card(tmp_path) == {"test_accuracy": 0.5}
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["type"] = "unet"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="fashion_classifier"):
        load_classifier(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "nowhere")


# ---------------------------------------------------------------- the shipped extractor


N_SHIPPED = 2000  # test images run through the shipped classifier (once, shared below)


@pytest.fixture(scope="module")
def shipped():
    return load_classifier()


@pytest.fixture(scope="module")
def shipped_outputs(shipped, test_split):
    """(logits (N, 10), features (N, 128)) of the first N_SHIPPED test images."""
    images = test_split[0][:N_SHIPPED]
    feats = extract_features(shipped, images)
    with torch.no_grad():
        logits = shipped.head(torch.from_numpy(feats).float())  # dropout is off in eval mode
    return logits, feats


def test_shipped_folder_is_small_and_states_its_accuracy():
    size = sum(f.stat().st_size for f in BUNDLED_DIR.iterdir())
    assert size < 2_000_000
    card = read_card()
    assert card["test_accuracy"] >= 0.91 and "command" in card and "train_config" in card


def test_shipped_accuracy_matches_its_card(shipped, shipped_outputs, test_split):
    images, labels = test_split
    logits, _ = shipped_outputs
    assert torch.allclose(logits[:50], shipped(images[:50]), atol=1e-4)
    acc = prompt_accuracy(logits, labels[:N_SHIPPED])
    assert abs(acc - read_card()["test_accuracy"]) < 0.03


def test_prompt_accuracy_of_perfect_and_random_generators(shipped_outputs, test_split):
    # A perfect generator returns real images of the prompted class; a random one ignores it.
    logits, _ = shipped_outputs
    prompted = test_split[1][:N_SHIPPED]
    card_accuracy = read_card()["test_accuracy"]
    assert prompt_accuracy(logits, prompted) == pytest.approx(card_accuracy, abs=0.03)
    ignored = torch.randint(0, 10, (N_SHIPPED,), generator=torch.Generator().manual_seed(0))
    assert prompt_accuracy(logits, ignored) == pytest.approx(0.1, abs=0.03)


def test_fd_fashion_floor_and_separation(shipped, shipped_outputs, test_split):
    _, feats = shipped_outputs
    labels = test_split[1][:N_SHIPPED].numpy()
    half = N_SHIPPED // 2
    floor = frechet_distance(feats[:half], feats[half:])  # two halves of one real set
    shoes = feats[np.isin(labels, [5, 7, 9])]  # sandals, sneakers, ankle boots
    tops = feats[np.isin(labels, [0, 2, 4, 6])]  # t-shirts, pullovers, coats, shirts
    noise = extract_features(shipped, torch.rand(300, 1, 32, 32) * 2 - 1)
    assert frechet_distance(feats, feats) < 1e-6 * frechet_distance(shoes, tops)
    assert 10 * floor < frechet_distance(shoes, tops)
    assert 10 * floor < frechet_distance(feats[:half], noise)
