"""Evaluation pictures: confusion matrix, training curves, reliability, misclassified grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    _pyplot().close(fig)
    return path


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (recall per true class on the diagonal)."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    normalised = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    n = len(classes)
    size = min(max(5.0, 0.35 * n + 2), 30.0)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(n)
    small = n > 20
    ax.set_xticks(ticks, classes, rotation=90, fontsize=5 if small else 9)
    ax.set_yticks(ticks, classes, fontsize=5 if small else 9)
    if not small:
        for i in range(n):
            for j in range(n):
                value = normalised[i, j]
                if value > 0:
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if value > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalised)")
    return _save(fig, path)


def plot_curves(history: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """Loss and accuracy per epoch for train and val (from the run's metric history)."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, ax in (("loss", loss_ax), ("acc", acc_ax)):
        for split in ("train", "val"):
            points = history.get(f"{split}/{name}") or []
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    loss_ax.set_title("loss")
    acc_ax.set_title("accuracy")
    return _save(fig, path)


def plot_reliability(table: Sequence[Mapping[str, float]], ece: float, path: Path) -> Path:
    """Reliability diagram: accuracy vs confidence per bin, with the ECE."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    centres = [(row["low"] + row["high"]) / 2 for row in table]
    width = table[0]["high"] - table[0]["low"] if table else 0.1
    accuracies = [row["accuracy"] for row in table]
    counts = [row["count"] for row in table]
    ax.bar(centres, accuracies, width=width * 0.95, color="#4c72b0", edgecolor="black",
           label="accuracy")  # fmt: skip
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    for x, acc, count in zip(centres, accuracies, counts, strict=True):
        if count:
            ax.text(x, acc + 0.01, str(count), ha="center", fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE = {ece:.4f})")
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_misclassified(
    images: Sequence[Any],
    true_labels: Sequence[str],
    predicted: Sequence[str],
    confidences: Sequence[float],
    path: Path,
    columns: int = 6,
) -> Path:
    """A grid of misclassified images titled with true and predicted labels."""
    plt = _pyplot()
    count = max(1, len(images))
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.2, rows * 2.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not images:
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    for ax, image, truth, guess, confidence in zip(
        axes.ravel(), images, true_labels, predicted, confidences, strict=False
    ):
        ax.imshow(image)
        ax.set_title(f"true: {truth}\npred: {guess} ({confidence:.2f})", fontsize=7)
    return _save(fig, path)
