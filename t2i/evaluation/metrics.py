"""Evaluation metrics: tensors or arrays in, floats out. Each names its definition.

Feature-space metrics (`frechet_distance`, `kid`) take features from an extractor trained here
(see `classifier.py`), so their values are named for it (`fd_fashion`, not FID): they are
comparable only with numbers from the same extractor, and come with their real-vs-real floor.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# psnr lives in the core (editing and evaluation both use it); exported here with the metrics
from t2i.images import psnr  # noqa: F401

ArrayLike = np.ndarray | torch.Tensor


def _as_2d(feats: ArrayLike, name: str) -> np.ndarray:
    a = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else feats
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"{name} must be (N, D) features with N >= 2, got shape {a.shape}")
    return a


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh (negative round-off -> 0)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID):

        ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

    The cross term uses tr((S_a S_b)^1/2) = tr((S_a^1/2 S_b S_a^1/2)^1/2), a symmetric PSD form
    whose eigenvalues are real, so singular covariances (dead units) need no epsilon.

    Args:
        feats_a, feats_b: (N_a, D), (N_b, D) features; float64 internally.
    """
    a, b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(s_a)
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    tr_cross = np.sqrt(np.clip(cross, 0, None)).sum()
    fd = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_cross
    return float(max(fd, 0.0))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3."""
    d, m = x.shape[1], len(x)
    k_xx, k_yy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    off = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(off - 2 * k_xy.mean())


def kid(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2, polynomial kernel
    (x.y/d + 1)^3, averaged over `subsets` random subsets of `subset_size` drawn without
    replacement from each set -> (mean, std over subsets). Unbiased: can be slightly < 0.

    subset_size is capped at the smaller set's size.
    """
    a, b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: {a.shape[1]} vs {b.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    vals = [
        _mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, False)])
        for _ in range(subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals))


def prompt_accuracy(logits_or_preds: ArrayLike, labels: ArrayLike) -> float:
    """Share of generated images the classifier assigns to the prompted class.

    Args:
        logits_or_preds: (N, K) logits / probabilities (argmax taken) or (N,) class indices.
        labels: (N,) prompted class indices.
    """
    p, y = _tensor(logits_or_preds), _tensor(labels)
    preds = p.argmax(-1) if p.ndim == 2 else p
    if preds.ndim != 1 or preds.shape != y.shape or len(y) == 0:
        raise ValueError(
            f"need (N, K) logits or (N,) predictions and (N,) labels, N > 0; "
            f"got {tuple(p.shape)} and {tuple(y.shape)}"
        )
    return float((preds.long() == y.long()).double().mean())


def _tensor(a: ArrayLike) -> torch.Tensor:
    return a.detach().cpu() if torch.is_tensor(a) else torch.as_tensor(np.asarray(a))


def _unit(e: ArrayLike, name: str) -> torch.Tensor:
    t = _tensor(e).double()
    if t.ndim != 2:
        raise ValueError(f"{name} must be (N, E) embeddings, got shape {tuple(t.shape)}")
    return F.normalize(t, dim=-1)


def clip_score(image_emb: ArrayLike, text_emb: ArrayLike) -> float:
    """CLIP score (Hessel et al. 2021, as used for text-to-image: 100 * max(cos, 0)), the mean
    over pairs (image i, text i) of the clipped cosine similarity, x100. Range 0..100."""
    i, t = _unit(image_emb, "image_emb"), _unit(text_emb, "text_emb")
    if i.shape != t.shape:
        raise ValueError(f"image_emb {tuple(i.shape)} and text_emb {tuple(t.shape)} must match")
    return float(100 * (i * t).sum(-1).clamp(min=0).mean())


def r_precision(
    image_emb: ArrayLike,
    text_emb: ArrayLike,
    k: int = 1,
    pool: int = 100,
    seed: int = 0,
    groups: ArrayLike | None = None,
) -> float:
    """CLIP R-precision (Xu et al. 2018, AttnGAN; Park et al. 2021): for each image i, is its own
    text i among the top-k by cosine similarity in a pool of `pool` texts (its own + pool - 1
    random others)? Returns the hit rate; chance is k / pool.

    Args:
        image_emb, text_emb: (N, E) paired embeddings (normalised here).
        groups: optional (N,) ids; texts sharing image i's id (e.g. the same caption) are never
            its distractors. Ties with a distractor count as misses.
    """
    i, t = _unit(image_emb, "image_emb"), _unit(text_emb, "text_emb")
    n = len(i)
    if i.shape != t.shape:
        raise ValueError(f"image_emb {tuple(i.shape)} and text_emb {tuple(t.shape)} must match")
    if not 1 <= k <= pool:
        raise ValueError(f"need 1 <= k <= pool, got k={k}, pool={pool}")
    g = np.arange(n) if groups is None else np.asarray(groups)
    sim = (i @ t.T).numpy()  # (N_img, N_txt) cosine similarities, one matmul
    rng = np.random.default_rng(seed)
    hits = 0
    for a in range(n):
        others = np.flatnonzero(g != g[a])
        if len(others) < pool - 1:
            raise ValueError(
                f"pool {pool} needs {pool - 1} distractors; item {a} has {len(others)}"
            )
        distract = rng.choice(others, pool - 1, replace=False)
        rank = int((sim[a, distract] >= sim[a, a]).sum())  # distractors at least as close
        hits += rank < k
    return hits / n


def _check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"need two (B, C, H, W) batches of one shape, got {x.shape}, {y.shape}")


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    value_range: tuple[float, float] = (-1.0, 1.0),
    window: int = 11,
    sigma: float = 1.5,
) -> float:
    """Structural similarity (Wang et al. 2004, eq. 13): local means, variances and covariance
    under an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, per channel, over the valid
    region (no padding), averaged over pixels, channels and images. 1 for identical images.

    SSIM is not shift-invariant (its luminance term assumes intensities >= 0), so images are first
    mapped from `value_range` to [0, 1], as 8-bit images are in the paper (L = 1).
    Images smaller than the window use a window of the image's size.
    """
    _check_images(x, y)
    lo, hi = value_range
    x, y = (x.double() - lo) / (hi - lo), (y.double() - lo) / (hi - lo)
    c = x.shape[1]
    size = min(window, x.shape[2], x.shape[3])
    w = _gaussian_window(size, sigma).expand(c, 1, size, size)

    def blur(z):
        return F.conv2d(z, w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    return float((luminance * contrast_structure).mean())


def pairwise_rms(images: torch.Tensor) -> float:
    """Diversity of images of one prompt: the mean RMS distance over the ordered pairs of
    distinct images (N >= 2, C, H, W), in the images' units (near 0: mode collapse)."""
    flat = images.flatten(1).float()
    n = len(flat)
    if n < 2:
        raise ValueError(f"pairwise_rms needs at least 2 images, got {n}")
    dist = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    return dist.sum().item() / (n * (n - 1))


def compositional_accuracy(verdicts: list) -> dict[str, float]:
    """GenEval-style image-level accuracy of `shapes` images from the exact judge's Verdicts
    (t2i.data.judge.judge): `overall` = share of images with every stated fact right; per
    category = share of the images whose caption states it with all its facts right;
    `n_<category>` = how many images state it; `n` = number of images.
    """
    if not verdicts:
        raise ValueError("compositional_accuracy needs at least one verdict, got none")
    per: dict[str, list[bool]] = {}
    for v in verdicts:
        for cat, holds in v.by_category().items():
            per.setdefault(cat, []).append(holds)
    out = {"overall": float(np.mean([v.ok for v in verdicts])), "n": len(verdicts)}
    for cat in sorted(per):
        out[cat] = float(np.mean(per[cat]))
        out[f"n_{cat}"] = len(per[cat])
    return out
