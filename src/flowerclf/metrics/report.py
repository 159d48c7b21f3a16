"""Turn predictions on a split into metrics, a JSON + Markdown report and PNGs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowerclf.core.imaging import ImageDecodeError, load_rgb
from flowerclf.core.metric_names import REPORT_METRICS
from flowerclf.data.manifest import ManifestRow
from flowerclf.metrics import plots
from flowerclf.metrics.classification import classification_metrics, expected_calibration_error

MAX_MISCLASSIFIED = 24


@dataclass
class Predictions:
    """Model outputs on one set of manifest rows (aligned by position)."""

    probabilities: np.ndarray  # (N, C)
    embeddings: np.ndarray  # (N, D)
    labels: np.ndarray  # (N,)
    ids: np.ndarray  # (N,) manifest ids


def render_markdown(metrics: Mapping[str, Any], title: str) -> str:
    lines = [f"# {title}", "", "| metric | value |", "|---|---:|"]
    for key in REPORT_METRICS:
        if key in metrics:
            value = metrics[key]
            lines.append(f"| {key} | {value if isinstance(value, int) else f'{value:.4f}'} |")
    lines += ["", "## Per class", "", "| class | precision | recall | f1 | support |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
            f"{row['support']} |"
        )
    pictures = metrics.get("plots", {})
    if pictures:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({Path(path).name})" for name, path in pictures.items()]
    return "\n".join(lines) + "\n"


def write_evaluation(
    predictions: Predictions,
    classes: Sequence[str],
    rows_by_id: Mapping[int, ManifestRow],
    raw_dir: Path | None,
    out_dir: Path,
    *,
    split: str,
    history: Mapping[str, Sequence[tuple[int, float]]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute metrics, write ``metrics.json``, ``report.md`` and the PNGs into ``out_dir``.

    Returns:
        The metrics, with ``plots`` (name -> path) and ``report`` paths added.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = classification_metrics(predictions.probabilities, predictions.labels, classes)
    metrics["split"] = split
    if extra:
        metrics.update(extra)
    paths: dict[str, str] = {}
    paths["confusion_matrix"] = str(
        plots.plot_confusion_matrix(
            np.asarray(metrics["confusion_matrix"]), classes, out_dir / "confusion_matrix.png"
        )
    )
    ece, table = expected_calibration_error(predictions.probabilities, predictions.labels)
    paths["reliability"] = str(plots.plot_reliability(table, ece, out_dir / "reliability.png"))
    if history:
        paths["curves"] = str(plots.plot_curves(history, out_dir / "curves.png"))
    predicted = predictions.probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != predictions.labels)[:MAX_MISCLASSIFIED]
    images, truths, guesses, confidences = [], [], [], []
    if raw_dir is not None:
        for index in wrong:
            row = rows_by_id[int(predictions.ids[index])]
            try:
                image = load_rgb(raw_dir / row.path)
            except ImageDecodeError:
                continue
            image.thumbnail((160, 160))
            images.append(np.asarray(image))
            truths.append(classes[int(predictions.labels[index])])
            guesses.append(classes[int(predicted[index])])
            confidences.append(float(predictions.probabilities[index].max()))
        paths["misclassified"] = str(
            plots.plot_misclassified(
                images, truths, guesses, confidences, out_dir / "misclassified.png"
            )
        )
    metrics["plots"] = paths
    metrics["misclassified"] = [
        {
            "path": rows_by_id[int(predictions.ids[i])].path,
            "true": classes[int(predictions.labels[i])],
            "predicted": classes[int(predicted[i])],
            "confidence": float(predictions.probabilities[i].max()),
        }
        for i in np.flatnonzero(predicted != predictions.labels)
    ]
    json_path = out_dir / "metrics.json"
    md_path = out_dir / "report.md"
    metrics["report"] = {"json": str(json_path), "markdown": str(md_path)}
    json_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(metrics, f"Evaluation on {split}"), encoding="utf-8")
    return metrics
