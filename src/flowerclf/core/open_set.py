"""Calibrated confidence and unknown-image (open-set) scores at run time: NumPy only.

One definition for every runtime (Python API, CLI, REST, UI, MLflow pyfunc): the backends
return raw logits and embeddings, and this module turns them into

- calibrated probabilities, ``softmax(logits / T)`` with the temperature ``T`` fitted on
  the validation split at export, and
- an ``unknown_score`` per image, higher = less like the training classes, from one of
  :data:`METHODS`; an image is *known* when its score is at most the package's threshold
  (chosen at export so that ``reject.keep`` of the known validation images are kept).

``msp_knn`` combines the two scores that see different things: MSP (low confidence; best
on unseen flower species, which look like the training classes) and kNN distance (far from
every training image; best on non-flower images). Each is replaced by its rank among the
known validation images' scores (its empirical CDF, stored in the package), and the two
ranks are averaged, so neither score's units dominate.

The fitting lives in :mod:`flowerclf.metrics.open_set` / :mod:`flowerclf.metrics.calibration`
and :mod:`flowerclf.export.open_world`; the descriptor section and the statistics file it
writes are read here. Packages written before this section existed still load: calibration
is the identity and rejection is reported as unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flowerclf.core.errors import PackageError, UsageError

OPEN_WORLD_KEY = "open_world"  # the descriptor section
OPEN_SET_FILE = "open_set.npz"  # statistics the distance-based scores need
OPEN_SET_FILE_KEY = "open_set"  # its key in the descriptor's "files"
METHODS = ("msp", "energy", "knn", "mahalanobis", "msp_knn")
STATS_METHODS = ("knn", "mahalanobis", "msp_knn")  # need open_set.npz
UNKNOWN_MESSAGE = "not a flower this model knows"
_CHUNK = 1024  # rows per block when comparing against the training bank (bounded memory)


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``log softmax(logits / temperature)`` in float64 (stable)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)``: the calibrated probabilities, float32."""
    return np.exp(log_softmax(logits, temperature)).astype(np.float32)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    values = np.asarray(logits, dtype=np.float64)
    top = values.max(axis=1)
    return top + np.log(np.exp(values - top[:, None]).sum(axis=1))


def msp_score(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``1 - max calibrated probability``: low confidence reads as unknown."""
    return 1.0 - np.exp(log_softmax(logits, temperature).max(axis=1))


def energy_score(logits: np.ndarray) -> np.ndarray:
    """The free energy ``-logsumexp(logits)`` (Liu et al. 2020): small total evidence reads
    as unknown. Uses the raw logits: the energy is not shift- or scale-invariant."""
    return -logsumexp(logits)


def knn_score(embeddings: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """``1 - cosine similarity`` to the k-th nearest training embedding (Sun et al. 2022).

    Both sides are L2-normalised rows, so the dot product is the cosine similarity.
    """
    if len(bank) == 0:
        raise PackageError("the open-set statistics hold no training embeddings")
    k = max(1, min(int(k), len(bank)))
    queries = np.asarray(embeddings, dtype=np.float32)
    scores = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), _CHUNK):
        sims = queries[start : start + _CHUNK] @ bank.T
        kth = np.partition(-sims, k - 1, axis=1)[:, k - 1]
        scores[start : start + len(sims)] = 1.0 + kth  # -kth is the k-th largest similarity
    return scores


def mahalanobis_score(
    embeddings: np.ndarray, class_means: np.ndarray, precision: np.ndarray
) -> np.ndarray:
    """Squared Mahalanobis distance to the nearest class mean, shared covariance
    (Lee et al. 2018): far from every class reads as unknown."""
    queries = np.asarray(embeddings, dtype=np.float64)
    best = np.full(len(queries), np.inf)
    for mean in np.asarray(class_means, dtype=np.float64):
        centred = queries - mean
        distance = np.einsum("nd,de,ne->n", centred, precision, centred)
        best = np.minimum(best, distance)
    return best


def empirical_cdf(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of ``reference`` (sorted) scores at or below each score, interpolated between
    neighbours so that the combined score has few ties; 0 below, 1 above the reference."""
    ranks = np.arange(1, len(reference) + 1, dtype=np.float64) / len(reference)
    return np.interp(np.asarray(scores, dtype=np.float64), reference, ranks, left=0.0, right=1.0)


def combined_score(msp: np.ndarray, knn: np.ndarray, stats: OpenSetStats) -> np.ndarray:
    """Mean of the validation ranks of the MSP and kNN scores (see the module docstring)."""
    if stats.reference_msp is None or stats.reference_knn is None:
        raise PackageError(
            "method 'msp_knn' needs the validation reference scores; re-export the package"
        )
    return (empirical_cdf(msp, stats.reference_msp) + empirical_cdf(knn, stats.reference_knn)) / 2


@dataclass(frozen=True)
class OpenSetStats:
    """What the distance-based scores need: the training embeddings (kNN bank), the class
    means and shared precision matrix of the embeddings (Mahalanobis), and the known
    validation images' sorted MSP and kNN scores (``msp_knn``; None in older packages)."""

    bank: np.ndarray  # (N, D) float32, L2-normalised
    class_means: np.ndarray  # (C, D)
    precision: np.ndarray  # (D, D), inverse of the shared (shrunk) covariance
    k: int
    reference_msp: np.ndarray | None = None  # (V,) sorted
    reference_knn: np.ndarray | None = None  # (V,) sorted

    def with_references(self, msp: np.ndarray, knn: np.ndarray) -> OpenSetStats:
        """A copy holding the validation scores ``msp_knn`` ranks against."""
        return replace(
            self,
            reference_msp=np.sort(np.asarray(msp, dtype=np.float64)),
            reference_knn=np.sort(np.asarray(knn, dtype=np.float64)),
        )

    def save(self, path: Path) -> Path:
        references = {
            name: values.astype(np.float64)
            for name, values in (("reference_msp", self.reference_msp),
                                 ("reference_knn", self.reference_knn))
            if values is not None
        }  # fmt: skip
        np.savez_compressed(
            path,
            bank=self.bank.astype(np.float32),
            class_means=self.class_means.astype(np.float64),
            precision=self.precision.astype(np.float64),
            k=np.asarray(self.k, dtype=np.int64),
            **references,
        )
        return path

    @classmethod
    def load(cls, path: Path) -> OpenSetStats:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    bank=data["bank"].astype(np.float32),
                    class_means=data["class_means"],
                    precision=data["precision"],
                    k=int(data["k"]),
                    reference_msp=_sorted_or_none(data, "reference_msp"),
                    reference_knn=_sorted_or_none(data, "reference_knn"),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise PackageError(f"{path}: unreadable open-set statistics: {exc}") from None


def _sorted_or_none(data: Any, key: str) -> np.ndarray | None:
    if key not in data.files:
        return None
    values = np.asarray(data[key], dtype=np.float64)
    if values.ndim != 1 or len(values) == 0 or not np.all(np.diff(values) >= 0):
        raise ValueError(f"{key} must be a non-empty sorted vector")
    return values


def unknown_scores(
    method: str,
    logits: np.ndarray,
    embeddings: np.ndarray,
    temperature: float = 1.0,
    stats: OpenSetStats | None = None,
) -> np.ndarray:
    """The ``method`` score of each row (higher = less like the training classes)."""
    if method == "msp":
        return msp_score(logits, temperature)
    if method == "energy":
        return energy_score(logits)
    if stats is None:
        raise PackageError(f"unknown-score method {method!r} needs the open-set statistics")
    if method == "knn":
        return knn_score(embeddings, stats.bank, stats.k)
    if method == "mahalanobis":
        return mahalanobis_score(embeddings, stats.class_means, stats.precision)
    if method == "msp_knn":
        return combined_score(
            msp_score(logits, temperature), knn_score(embeddings, stats.bank, stats.k), stats
        )
    raise UsageError(f"unknown open-set method {method!r}; valid: {', '.join(METHODS)}")


@dataclass(frozen=True)
class OpenWorld:
    """A package's calibration and rejection settings, with load-time overrides applied.

    ``method is None`` means rejection is unavailable (an older package): every image is
    reported as known and ``unknown_score`` is None; ``reason`` says why.
    """

    temperature: float = 1.0
    method: str | None = None
    threshold: float | None = None
    enabled: bool = False
    stats: OpenSetStats | None = None
    keep: float | None = None
    reason: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.method is not None and self.threshold is not None

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities, ``(N, C)`` float32."""
        return softmax(logits, self.temperature)

    def scores(self, logits: np.ndarray, embeddings: np.ndarray) -> np.ndarray | None:
        """Unknown scores ``(N,)``, or None when rejection is unavailable."""
        if self.method is None:
            return None
        return unknown_scores(self.method, logits, embeddings, self.temperature, self.stats)

    def is_known(self, score: float | None) -> bool:
        """Known unless rejection is on and the score is above the threshold."""
        if not self.enabled or score is None or self.threshold is None:
            return True
        return bool(score <= self.threshold)

    def describe(self) -> dict[str, Any]:
        """For ``Classifier.info`` / ``GET /v1/model``: what this runtime does."""
        return {
            "temperature": self.temperature,
            "rejection": {
                "available": self.available,
                "enabled": self.enabled,
                "method": self.method,
                "threshold": self.threshold,
                "keep": self.keep,
                **({"reason": self.reason} if self.reason else {}),
            },
        }


def load_open_world(
    descriptor: dict[str, Any],
    root: Path,
    *,
    reject: bool = True,
    threshold: float | None = None,
    method: str | None = None,
) -> OpenWorld:
    """Read the descriptor's ``open_world`` section (and statistics file) with overrides.

    Args:
        reject: False turns rejection off (scores are still reported, all images known).
        threshold: replaces the package's threshold for the chosen method.
        method: one of :data:`METHODS` instead of the package's default; it must have a
            fitted threshold in the package unless ``threshold`` is given.
    """
    if method is not None and method not in METHODS:
        raise UsageError(f"unknown open-set method {method!r}; valid: {', '.join(METHODS)}")
    section = descriptor.get(OPEN_WORLD_KEY)
    if not isinstance(section, dict):
        return OpenWorld(reason="the package predates unknown-image rejection; re-export it")
    temperature = float(section.get("temperature", 1.0))
    if not np.isfinite(temperature) or temperature <= 0:
        raise PackageError(f"open_world.temperature must be > 0, got {temperature!r}")
    rejection = section.get("reject") or {}
    thresholds = {str(k): float(v) for k, v in (rejection.get("thresholds") or {}).items()}
    chosen = method or rejection.get("method")
    if chosen is None:
        reason = str(section.get("reason") or "the package has no rejection method")
        return OpenWorld(temperature, reason=reason)
    limit = threshold if threshold is not None else thresholds.get(chosen)
    if limit is None:
        raise UsageError(
            f"the package has no fitted threshold for method {chosen!r} (fitted: "
            f"{', '.join(thresholds) or 'none'}); pass a threshold"
        )
    stats = None
    if chosen in STATS_METHODS:
        relative = descriptor.get("files", {}).get(OPEN_SET_FILE_KEY)
        if not relative or not (root / relative).is_file():
            raise PackageError(f"{root}: method {chosen!r} needs {OPEN_SET_FILE}, not found")
        stats = OpenSetStats.load(root / relative)
    return OpenWorld(
        temperature=temperature,
        method=chosen,
        threshold=float(limit),
        enabled=reject,
        stats=stats,
        keep=rejection.get("keep"),
        thresholds=thresholds,
    )
