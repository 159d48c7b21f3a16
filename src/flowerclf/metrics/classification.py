"""Classification metrics from predicted probabilities (NumPy only, no torch needed)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``matrix[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> tuple[float, list[dict[str, float]]]:
    """ECE with equal-width confidence bins; also returns the per-bin table."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    ece = 0.0
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        count = int(in_bin.sum())
        if count:
            accuracy = float(correct[in_bin].mean())
            mean_conf = float(confidence[in_bin].mean())
            ece += count / len(labels) * abs(accuracy - mean_conf)
        else:
            accuracy = mean_conf = 0.0
        table.append(
            {"low": float(low), "high": float(high), "count": count, "accuracy": accuracy,
             "confidence": mean_conf}
        )  # fmt: skip
    return float(ece), table


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class P/R/F1/support, cross-entropy, top-5, ECE."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(classes)
    if probabilities.shape != (len(labels), num_classes):
        raise ValueError(
            f"probabilities shape {probabilities.shape} != ({len(labels)}, {num_classes})"
        )
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, num_classes)
    true_positive = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    precision = np.divide(true_positive, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros(num_classes), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0
    )
    present = support > 0
    eps = 1e-12
    cross_entropy = float(
        -np.log(np.clip(probabilities[np.arange(len(labels)), labels], eps, 1)).mean()
    )
    ece, _ = expected_calibration_error(probabilities, labels)
    metrics: dict[str, Any] = {
        "num_samples": len(labels),
        "accuracy": float((predictions == labels).mean()) if len(labels) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "cross_entropy": cross_entropy,
        "ece": ece,
    }
    if num_classes > 5:
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        metrics["top5_accuracy"] = float((top5 == labels[:, None]).any(axis=1).mean())
    metrics["per_class"] = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    metrics["confusion_matrix"] = matrix.tolist()
    return metrics
