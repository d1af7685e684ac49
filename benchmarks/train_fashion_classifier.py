"""Train the Fashion-MNIST classifier shipped in t2i/evaluation/extractors/fashion_classifier/.

    python3 benchmarks/train_fashion_classifier.py                 # the shipped recipe
    python3 benchmarks/train_fashion_classifier.py --epochs 1 --out /tmp/clf   # a quick try

Trains on the 60k train split, reports top-1 on the 10k t10k split with the fp16 weights as
saved, and the real-vs-real floor of fd_fashion / kid_fashion (train features vs test features).
"""

from __future__ import annotations

import argparse
import dataclasses

from t2i.evaluation.classifier import (
    BUNDLED_DIR,
    ClassifierConfig,
    ClassifierTrainConfig,
    evaluate,
    fashion_tensors,
    load_classifier,
    save_classifier,
    train_classifier,
)
from t2i.evaluation.features import extract_features
from t2i.evaluation.metrics import frechet_distance, kid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=str(BUNDLED_DIR))
    p.add_argument("--preset", default="fashion")
    for f in dataclasses.fields(ClassifierTrainConfig):
        kind = type(f.default)
        if kind is bool:
            p.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(f"--{f.name}", type=kind, default=f.default)
    args = p.parse_args()
    cfg = ClassifierTrainConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(ClassifierTrainConfig)}
    )
    train, test = fashion_tensors("train"), fashion_tensors("test")
    model, card = train_classifier(train, test, ClassifierConfig.preset(args.preset), cfg)
    card["data"] = "Fashion-MNIST (Xiao et al. 2017): train 60k, test t10k 10k; 32x32, [-1, 1]"
    card["command"] = "python3 benchmarks/train_fashion_classifier.py"
    save_classifier(model, args.out, card)
    clf = load_classifier(args.out)  # the fp16 weights as shipped
    card["test_accuracy"] = round(evaluate(clf, *test), 4)
    f_train, f_test = extract_features(clf, train[0]), extract_features(clf, test[0])
    card["fd_fashion_train_vs_test"] = round(frechet_distance(f_train, f_test), 4)
    k_mean, k_std = kid(f_train, f_test, subsets=100, subset_size=1000, seed=0)
    card["kid_fashion_train_vs_test"] = [round(k_mean, 6), round(k_std, 6)]
    save_classifier(clf, args.out, card)
    print({k: v for k, v in card.items() if k != "train_config"})


if __name__ == "__main__":
    main()
