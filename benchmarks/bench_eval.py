"""Figures of the shipped Fashion-MNIST feature extractor: accuracy per class, the real-vs-real
floor of fd_fashion / kid_fashion at several sample sizes, and the cost of each metric.

    python3 benchmarks/bench_eval.py                 # accuracy, floors, metric cost
    python3 benchmarks/bench_eval.py --train-speed   # classifier step: fp32/bf16 x 1/2 threads

FD is biased upwards at small n (the sample covariance is noisy), so a generated set of n images
must be compared with the floor at the same n: this prints that floor for n = 500 ... 10,000.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from timing import median_seconds  # benchmarks/timing.py, beside this script

from t2i.data.fashion import CLASSES
from t2i.evaluation.classifier import (
    BUNDLED_DIR,
    ClassifierConfig,
    FashionClassifier,
    fashion_tensors,
    load_classifier,
    read_card,
)
from t2i.evaluation.features import extract_features
from t2i.evaluation.metrics import frechet_distance, kid


def train_speed(rounds: int = 5) -> None:
    """Seconds per training step (batch 128) of the shipped architecture, interleaved, median."""
    torch.manual_seed(0)
    model = FashionClassifier(ClassifierConfig.preset("fashion"))
    opt = torch.optim.AdamW(model.parameters())
    x, y = torch.randn(128, 1, 32, 32), torch.randint(0, 10, (128,))

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    settings = [(t, b) for t in (1, 2) for b in (False, True)]
    times: dict = {s: [] for s in settings}
    for _ in range(rounds):
        for threads, bf16 in settings:
            torch.set_num_threads(threads)
            # median_seconds makes a warm-up call for this setting first
            times[(threads, bf16)].append(median_seconds(lambda b=bf16: step(b), 3))
    print("| threads | fp32 s/step | bf16 s/step |\n|---|---|---|")
    for threads in (1, 2):
        fp32, bf16 = (statistics.median(times[(threads, b)]) for b in (False, True))
        print(f"| {threads} | {fp32:.3f} | {bf16:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--folder", default=str(BUNDLED_DIR), help="classifier folder")
    p.add_argument("--train-speed", action="store_true", help="time training steps instead")
    args = p.parse_args()
    if args.train_speed:
        return train_speed()
    torch.set_num_threads(1)  # faster than 2 on this shared 2-core machine (see BENCHMARKS.md)
    clf = load_classifier(args.folder)
    card = read_card(args.folder)
    (x_train, _), (x_test, y_test) = fashion_tensors("train"), fashion_tensors("test")
    t0 = time.perf_counter()
    f_test = extract_features(clf, x_test)
    rate = len(x_test) / (time.perf_counter() - t0)
    f_train = extract_features(clf, x_train)
    with torch.no_grad():
        preds = torch.cat([clf(x_test[i : i + 1000]).argmax(-1) for i in range(0, 10_000, 1000)])
    print(f"card test accuracy {card['test_accuracy']:.4f}; features: {rate:.0f} images/s")
    print("| class | test accuracy |\n|---|---|")
    for k, name in enumerate(CLASSES):
        print(f"| {name} | {(preds[y_test == k] == k).double().mean():.3f} |")
    rng = np.random.default_rng(0)  # KID: 50 subsets of min(n / 2, 1000) from each side
    print("\n| n | fd_fashion train vs test | kid_fashion train vs test (x1e3) |\n|---|---|---|")
    for n in (500, 1000, 2000, 5000, 10_000):
        a = f_train[rng.choice(len(f_train), n, replace=False)]
        b = f_test[rng.choice(len(f_test), n, replace=False)]
        k_mean, k_std = kid(a, b, subsets=50, subset_size=min(n // 2, 1000), seed=0)
        print(f"| {n} | {frechet_distance(a, b):.3f} | {1e3 * k_mean:.3f} ± {1e3 * k_std:.3f} |")
    a, b = f_train[:1000], f_test[:1000]
    fd_s = median_seconds(lambda: frechet_distance(a, b), 3)
    kid_s = median_seconds(lambda: kid(a, b, subsets=100, subset_size=1000), 3)
    print(f"\ncost at n=1000, d={a.shape[1]}: FD {fd_s:.3f} s, KID (100 x 1000) {kid_s:.2f} s")


if __name__ == "__main__":
    main()
