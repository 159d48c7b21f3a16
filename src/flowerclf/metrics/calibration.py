"""Temperature scaling (Guo et al. 2017): one scalar ``T`` fitted on validation logits.

``softmax(logits / T)`` keeps every prediction (argmax is unchanged) and only makes the
confidence mean what it says. The negative log-likelihood is convex in ``1 / T``, so a
golden-section search over ``log T`` finds the minimum without an optimiser dependency.
"""

from __future__ import annotations

import math

import numpy as np

from flowerclf.core.open_set import log_softmax, softmax
from flowerclf.metrics.classification import expected_calibration_error

LOG_T_RANGE = (-4.0, 4.0)  # T in [0.018, 55]: far beyond any sane network
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL of ``labels`` under ``softmax(logits / temperature)``."""
    log_probs = log_softmax(logits, temperature)
    return float(-log_probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)].mean())


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, tolerance: float = 1e-5, max_steps: int = 200
) -> float:
    """The temperature minimising the NLL of ``labels`` (validation split).

    Raises:
        ValueError: no samples, or logits and labels disagree in length.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(logits) == 0 or len(logits) != len(labels):
        raise ValueError(
            f"need matching, non-empty logits and labels ({len(logits)}, {len(labels)})"
        )

    def loss(log_t: float) -> float:
        return negative_log_likelihood(logits, labels, math.exp(log_t))

    low, high = LOG_T_RANGE
    left, right = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    loss_left, loss_right = loss(left), loss(right)
    for _ in range(max_steps):
        if high - low < tolerance:
            break
        if loss_left <= loss_right:
            high, right, loss_right = right, left, loss_left
            left = high - _GOLDEN * (high - low)
            loss_left = loss(left)
        else:
            low, left, loss_left = left, right, loss_right
            right = low + _GOLDEN * (high - low)
            loss_right = loss(right)
    return float(math.exp((low + high) / 2.0))


def calibration_summary(
    logits: np.ndarray, labels: np.ndarray, temperature: float
) -> dict[str, float]:
    """ECE (15 bins) and NLL before and after scaling by ``temperature``."""
    before, _ = expected_calibration_error(softmax(logits), labels)
    after, _ = expected_calibration_error(softmax(logits, temperature), labels)
    return {
        "temperature": float(temperature),
        "ece_uncalibrated": float(before),
        "ece": float(after),
        "nll_uncalibrated": negative_log_likelihood(logits, labels, 1.0),
        "nll": negative_log_likelihood(logits, labels, temperature),
    }


def logits_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant, which softmax and temperature scaling ignore.

    For reports that kept only probabilities; a probability that underflowed to 0 is read
    as the smallest float32 (its logit gap is then ~103, which any sane T leaves at ~0).
    """
    tiny = np.finfo(np.float32).tiny
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), tiny, 1.0))
