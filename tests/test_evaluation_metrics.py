"""Metrics on cases with known answers: analytic Gaussians, naive references, perfect/random."""

import numpy as np
import pytest
import scipy.linalg
import torch

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


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _gaussian(rng, mu, cov, n):
    return rng.multivariate_normal(mu, cov, size=n)


def test_fd_of_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_of_a_shifted_set_is_the_squared_shift():
    # Same covariance, means differ by delta: FD = |delta|^2 exactly (sample moments too).
    x = np.random.default_rng(1).normal(size=(400, 8)) @ np.diag(np.arange(1.0, 9.0))
    delta = np.linspace(-1, 2, 8)
    assert frechet_distance(x, x + delta) == pytest.approx((delta**2).sum(), rel=1e-8)


def test_fd_matches_scipy_sqrtm_on_sample_moments():
    # Independent reference: the textbook formula with scipy.linalg.sqrtm of S_a S_b.
    rng = np.random.default_rng(2)
    a = _gaussian(rng, np.zeros(6), _random_cov(rng, 6), 300)
    b = _gaussian(rng, np.ones(6), _random_cov(rng, 6), 300)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b)
    ref -= 2 * np.trace(scipy.linalg.sqrtm(s_a @ s_b)).real
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_fd_of_samples_approaches_the_analytic_fd_of_two_gaussians():
    # Diagonal covariances commute: FD = |mu_a - mu_b|^2 + sum (sqrt(s_a) - sqrt(s_b))^2.
    rng = np.random.default_rng(3)
    var_a, var_b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([2.0, 1.0, 1.0, 0.5])
    mu_b = np.array([1.0, -1.0, 0.5, 0.0])
    analytic = (mu_b**2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    a = rng.normal(size=(40_000, 4)) * np.sqrt(var_a)
    b = rng.normal(size=(40_000, 4)) * np.sqrt(var_b) + mu_b
    assert frechet_distance(torch.from_numpy(a), b) == pytest.approx(analytic, rel=0.03)


def test_fd_survives_singular_covariances():
    # Dead units (zero variance), as ReLU features have: no NaN, still 0 for identical sets.
    x = np.random.default_rng(4).normal(size=(50, 64))
    x[:, :10] = 0.0
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(frechet_distance(x, x + 1.0))


def test_fd_rejects_mismatched_widths():
    with pytest.raises(ValueError, match="widths"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def _kid_naive(x, y):
    """MMD^2_u written as the double sums of Binkowski et al. (2018), eq. 3."""
    d, m = x.shape[1], len(x)

    def k(a, b):
        return (a @ b / d + 1) ** 3

    s_xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    s_yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    s_xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return s_xx / (m * (m - 1)) + s_yy / (m * (m - 1)) - 2 * s_xy / m**2


def test_kid_matches_the_double_sum_definition():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 3)) + 0.5
    mean, std = kid(x, y, subsets=1, subset_size=12)
    assert mean == pytest.approx(_kid_naive(x, y), rel=1e-10) and std == 0.0


def test_kid_is_unbiased_near_zero_for_one_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    same, same_std = kid(a, b, subsets=20, subset_size=200, seed=0)
    shifted, _ = kid(a, b + 0.5, subsets=20, subset_size=200, seed=0)
    assert abs(same) < 3 * same_std / np.sqrt(20) + 1e-3
    assert shifted > 20 * max(abs(same), same_std)
    assert kid(a, b, subsets=5, subset_size=100, seed=1) == kid(a, b, 5, 100, seed=1)


def test_prompt_accuracy_of_perfect_and_random_generators():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, 5000)
    assert prompt_accuracy(labels, labels) == 1.0
    random_preds = rng.integers(0, 10, 5000)  # a generator that ignores the prompt
    assert prompt_accuracy(random_preds, labels) == pytest.approx(0.1, abs=0.015)
    logits = torch.nn.functional.one_hot(torch.from_numpy(labels), 10).float()
    assert prompt_accuracy(logits, labels) == 1.0
    with pytest.raises(ValueError, match="labels"):
        prompt_accuracy(labels[:10], labels[:9])


def test_clip_score_range_and_value():
    e = torch.randn(20, 8)
    assert clip_score(e, 3 * e) == pytest.approx(100.0)
    assert clip_score(e, -e) == 0.0  # clipped at zero
    u = torch.tensor([[1.0, 0.0]])
    v = torch.tensor([[1.0, 1.0]])
    assert clip_score(u, v) == pytest.approx(100 / np.sqrt(2))


def test_r_precision_aligned_far_above_chance_random_at_chance():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(400, 32, generator=g)
    text = image + 0.5 * torch.randn(400, 32, generator=g)  # a well-aligned encoder pair
    assert r_precision(image, text, k=1, pool=100) > 0.9
    noise = torch.randn(400, 32, generator=g)  # an encoder that learned nothing
    chance = np.mean([r_precision(image, noise, k=5, pool=100, seed=s) for s in range(5)])
    assert chance == pytest.approx(0.05, abs=0.02)


def test_r_precision_never_uses_a_same_group_text_as_distractor():
    # Texts of one group are identical: as distractors they would tie with the own text.
    image = torch.randn(200, 8)
    text = torch.repeat_interleave(torch.randn(100, 8), 2, dim=0)
    groups = np.repeat(np.arange(100), 2)
    assert r_precision(text, text, pool=50, groups=groups) == 1.0
    assert r_precision(text, text, pool=50) < 1.0  # ties with the twin count as misses
    with pytest.raises(ValueError, match="distractors"):
        r_precision(image[:20], image[:20], pool=100)


def test_psnr_known_value():
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64) * 2 - 1
    assert psnr(x, x + 0.1) == pytest.approx(10 * np.log10(4 / 0.01), rel=1e-9)
    assert psnr(x, x) == float("inf")


def _ssim_naive(x, y, size=11, sigma=1.5, data_range=1.0):
    """Wang et al. (2004), eq. 13 with Gaussian-weighted statistics, one window at a time."""
    r = np.arange(size) - (size - 1) / 2
    w = np.exp(-(r**2) / (2 * sigma**2))
    w = np.outer(w, w) / np.outer(w, w).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            num = (2 * ma * mb + c1) * (2 * cov + c2)
            vals.append(num / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return np.mean(vals)


def test_ssim_matches_the_windowed_definition_per_channel():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 15, 14, generator=g) * 2 - 1
    y = (0.7 * x + 0.3 * torch.rand(1, 2, 15, 14, generator=g)).clamp(-1, 1)
    x01, y01 = (x.double() + 1) / 2, (y.double() + 1) / 2  # ssim maps [-1, 1] to [0, 1]
    ref = np.mean([_ssim_naive(x01[0, c].numpy(), y01[0, c].numpy()) for c in (0, 1)])
    assert ssim(x, y) == pytest.approx(ref, rel=1e-9)
    assert ssim(x, x) == pytest.approx(1.0)
    noise = torch.rand(1, 2, 15, 14, generator=g) * 2 - 1
    assert abs(ssim(x, noise)) < 0.15 < ssim(x, y) < 1


class _Verdict:
    """The two parts of t2i.data.judge.Verdict the aggregator reads."""

    def __init__(self, facts):
        self.facts = facts

    @property
    def ok(self):
        return all(h for _, _, h in self.facts)

    def by_category(self):
        out = {}
        for cat, _, h in self.facts:
            out[cat] = out.get(cat, True) and h
        return out


def test_compositional_accuracy_is_image_level_per_category():
    verdicts = [
        _Verdict([("count", "", True), ("colour", "", True), ("colour", "", False)]),
        _Verdict([("colour", "", True), ("binding", "", True)]),
        _Verdict([("count", "", False), ("binding", "", True)]),
    ]
    acc = compositional_accuracy(verdicts)
    assert acc["overall"] == pytest.approx(1 / 3)
    assert acc["count"] == 0.5 and acc["n_count"] == 2
    assert acc["colour"] == 0.5 and acc["binding"] == 1.0 and acc["n"] == 3
    with pytest.raises(ValueError):
        compositional_accuracy([])


def test_compositional_accuracy_of_perfect_and_mismatched_generators():
    # With the exact judge: renders of the prompted scene pass; renders of another scene fail.
    from t2i.data.judge import judge
    from t2i.data.shapes import ShapesConfig, make_caption, render_scene, sample_scene, scene_rng

    scenes, prompts = [], []
    for i in range(40):
        rng = scene_rng(7, "test", i)
        scenes.append(sample_scene(rng, ShapesConfig(), "test"))
        prompts.append(make_caption(scenes[-1], rng))
    images = [render_scene(s, 64) for s in scenes]
    perfect = compositional_accuracy([judge(im, p) for im, p in zip(images, prompts)])
    shuffled = compositional_accuracy([judge(im, p) for im, p in zip(images[1:], prompts)])
    assert perfect["overall"] >= 0.95
    assert shuffled["overall"] < 0.3 and shuffled["binding"] < perfect["binding"]


def test_pairwise_rms_is_the_mean_rms_distance_of_distinct_pairs():
    from t2i.evaluation.metrics import pairwise_rms

    a, b = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)
    assert pairwise_rms(torch.cat([a, b])) == pytest.approx(0.5)
    assert pairwise_rms(torch.cat([a, a, a])) == 0.0  # one image drawn three times: collapse
    with pytest.raises(ValueError, match="at least 2 images"):
        pairwise_rms(a)
