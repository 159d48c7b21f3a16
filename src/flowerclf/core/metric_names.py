"""The names of the metrics flowerclf computes, logs and prints: one list each."""

from __future__ import annotations

# Per-epoch curves Lightning logs during fit (the history plot, history.csv).
HISTORY_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")
# What a training run logs per split (``val/accuracy``...) and a later evaluation logs as
# ``evaluate/<split>/<name>``: the headline figures, kNN accuracy of the embeddings included.
LOGGED_METRICS = (
    "accuracy", "macro_f1", "weighted_f1", "cross_entropy", "ece", "top5_accuracy",
    "knn_accuracy",
)  # fmt: skip
# Every scalar an evaluation report holds: the compact metrics file (DVC), the CLI's lines.
REPORT_METRICS = (
    "num_samples", "accuracy", "top5_accuracy", "macro_f1", "weighted_f1", "macro_precision",
    "macro_recall", "cross_entropy", "cross_entropy_uncalibrated", "ece", "ece_uncalibrated",
    "temperature", "knn_accuracy",
)  # fmt: skip
