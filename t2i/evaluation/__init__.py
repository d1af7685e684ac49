"""Evaluation: metrics (tensors in, floats out) and feature extractors trained here.

from t2i.evaluation import frechet_distance, kid, load_classifier, extract_features
clf = load_classifier()                                   # shipped Fashion-MNIST classifier
fd_fashion = frechet_distance(extract_features(clf, fake), extract_features(clf, real))

from t2i.evaluation.evaluate import EvalConfig, evaluate    # `t2i eval`: report.json + grid
report = evaluate("runs/fashion/model", EvalConfig(data="fashion", n=1000), out_dir="eval/")
"""

from t2i.evaluation.classifier import load_classifier, read_card
from t2i.evaluation.emoji_clip import load_emoji_clip
from t2i.evaluation.features import extract_features, images_to_tensor
from t2i.evaluation.metrics import (
    clip_score,
    compositional_accuracy,
    frechet_distance,
    kid,
    prompt_accuracy,
    psnr,
    r_precision,
    ssim,
)

__all__ = [
    "clip_score",
    "compositional_accuracy",
    "extract_features",
    "frechet_distance",
    "images_to_tensor",
    "kid",
    "load_classifier",
    "load_emoji_clip",
    "prompt_accuracy",
    "psnr",
    "r_precision",
    "read_card",
    "ssim",
]
