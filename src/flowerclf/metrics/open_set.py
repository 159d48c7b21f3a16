"""Fitting and measuring unknown-image scores: statistics, thresholds, AUROC, FPR@95%TPR.

Convention everywhere: a score is higher for images less like the training classes, the
*positives* of the AUROC are the out-of-distribution images, and "TPR" in FPR@95%TPR is the
share of known (in-distribution) images kept, as in the OOD literature (Hendrycks & Gimpel
2017; Liu et al. 2020): FPR is then the share of unknown images wrongly kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flowerclf.core.open_set import OpenSetStats

DEFAULT_KNN_K = 1  # see flowerclf.export.options.DEFAULT_KNN_K
# Ledoit-Wolf style shrinkage towards a scaled identity: the shared covariance of a few
# thousand 128-d embeddings is otherwise close to singular, and its inverse noisy.
COVARIANCE_SHRINKAGE = 0.1


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Probability that a random unknown image scores above a random known one (ties 1/2).

    Computed from ranks (Mann-Whitney U), O(n log n).

    Raises:
        ValueError: either group is empty.
    """
    known = np.asarray(in_scores, dtype=np.float64)
    unknown = np.asarray(out_scores, dtype=np.float64)
    if len(known) == 0 or len(unknown) == 0:
        raise ValueError("AUROC needs at least one known and one unknown score")
    values = np.concatenate([known, unknown])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    # Average ranks over ties.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    unknown_rank_sum = ranks[len(known) :].sum()
    u = unknown_rank_sum - len(unknown) * (len(unknown) + 1) / 2.0
    return float(u / (len(known) * len(unknown)))


def fit_threshold(known_scores: np.ndarray, keep: float) -> float:
    """The score at or below which a share ``keep`` of the known images falls.

    Raises:
        ValueError: ``keep`` outside (0, 1] or no scores.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    scores = np.asarray(known_scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("no known-image scores to fit a threshold on")
    return float(np.quantile(scores, keep, method="higher"))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of unknown images kept when the threshold keeps ``tpr`` of the known ones."""
    threshold = fit_threshold(in_scores, tpr)
    return float((np.asarray(out_scores) <= threshold).mean())


def rejected_share(scores: np.ndarray, threshold: float) -> float:
    """Share of ``scores`` above ``threshold`` (rejected as unknown)."""
    scores = np.asarray(scores)
    return float((scores > threshold).mean()) if len(scores) else 0.0


def fit_stats(
    embeddings: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    k: int = DEFAULT_KNN_K,
    shrinkage: float = COVARIANCE_SHRINKAGE,
) -> OpenSetStats:
    """Class means, shared shrunk covariance (inverted) and the kNN bank from training
    embeddings.

    Raises:
        ValueError: a class has no training embedding.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    missing = [c for c in range(num_classes) if not (labels == c).any()]
    if missing:
        raise ValueError(f"classes {missing} have no training embeddings")
    means = np.stack([embeddings[labels == c].mean(axis=0) for c in range(num_classes)])
    centred = embeddings - means[labels]
    covariance = centred.T @ centred / max(1, len(embeddings) - num_classes)
    scale = np.trace(covariance) / covariance.shape[0]
    shrunk = (1.0 - shrinkage) * covariance + shrinkage * scale * np.eye(covariance.shape[0])
    precision = np.linalg.inv(shrunk)
    bank = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
    return OpenSetStats(bank=bank.astype(np.float32), class_means=means, precision=precision, k=k)


def separation(
    in_scores: np.ndarray, out_scores: np.ndarray, threshold: float | None = None
) -> dict[str, float]:
    """AUROC, FPR@95%TPR and (with a threshold) the share of unknown images rejected."""
    result = {
        "auroc": auroc(in_scores, out_scores),
        "fpr_at_95_tpr": fpr_at_tpr(in_scores, out_scores, 0.95),
        "count": len(out_scores),
    }
    if threshold is not None:
        result["rejected"] = rejected_share(out_scores, threshold)
    return result


def best_method(aurocs: Mapping[str, float]) -> str:
    """The method with the highest AUROC (ties: the first in the mapping's order)."""
    if not aurocs:
        raise ValueError("no AUROC measured")
    return max(aurocs, key=lambda method: aurocs[method])
