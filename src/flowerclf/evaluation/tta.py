"""``flowerclf evaluate <package> --tta``: what test-time augmentation buys, and costs.

Runs the package's test split once through the model without and once with the mirrored
view averaged in (:meth:`flowerclf.Classifier.run_arrays` ``tta=``), on the same decoded
images, and reports per mode: accuracy, macro-F1, ECE (15 bins) and NLL of the calibrated
probabilities the package serves, the share called known, and the model time per image;
then the gain in points and the cost ratio.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from flowerclf.core.imaging import load_rgb
from flowerclf.core.package_format import load_package
from flowerclf.evaluation.ood import package_test_rows, report_dir, write_report
from flowerclf.inference.backends import DEFAULT_BACKEND
from flowerclf.inference.classifier import Classifier
from flowerclf.metrics.classification import classification_metrics

MODES = {"single": False, "tta": True}


def evaluate_tta(
    package_dir: str | Path,
    out: str | Path | None = None,
    *,
    data_root: str | None = None,
    max_images: int = 10_000,
    backend: str = DEFAULT_BACKEND,
) -> dict[str, Any]:
    """Test-split metrics of the package with and without test-time augmentation.

    Images are decoded and preprocessed once per chunk of the classifier's batch size, so
    memory stays bounded by one chunk; model time is measured around the runtime calls only.
    """
    package = load_package(package_dir)
    rows, raw, _ = package_test_rows(package, data_root, max_images)
    labels = np.asarray([r.label for r in rows])
    probabilities: dict[str, list[np.ndarray]] = {mode: [] for mode in MODES}
    known: dict[str, list[np.ndarray]] = {mode: [] for mode in MODES}
    seconds = dict.fromkeys(MODES, 0.0)
    with Classifier.load(package.root, backend=backend) as classifier:
        backend = classifier.backend_name
        step = classifier.batch_size
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            batch = np.stack([classifier.preprocess(load_rgb(raw / r.path)) for r in chunk])
            for mode, tta in MODES.items():
                started = time.perf_counter()
                outputs = classifier.run_arrays(batch, tta)
                seconds[mode] += time.perf_counter() - started
                probabilities[mode].append(outputs.probabilities)
                scores = outputs.unknown_scores
                known[mode].append(
                    np.ones(len(chunk), bool)
                    if scores is None
                    else np.asarray([classifier.open_world.is_known(float(s)) for s in scores])
                )
    results = {
        mode: _mode_metrics(
            np.concatenate(probabilities[mode]), labels, list(package.classes), seconds[mode]
        )
        | {"known": float(np.concatenate(known[mode]).mean())}
        for mode in MODES
    }
    report: dict[str, Any] = {
        "package": str(package.root), "name": package.name, "split": "test",
        "count": len(rows), "backend": backend, "results": results,
        "accuracy_gain_points": 100 * (results["tta"]["accuracy"] - results["single"]["accuracy"]),
        "cost_ratio": results["tta"]["ms_per_image"] / results["single"]["ms_per_image"],
    }  # fmt: skip
    return write_report(report, report_dir(package, out, "tta"), "tta", render_tta_markdown)


def _mode_metrics(
    probabilities: np.ndarray, labels: np.ndarray, classes: list[str], seconds: float
) -> dict[str, Any]:
    metrics = classification_metrics(probabilities, labels, classes)
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "ece": metrics["ece"],
        "nll": metrics["cross_entropy"],
        "ms_per_image": 1000 * seconds / len(labels),
    }


def render_tta_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Test-time augmentation: {report['name']}",
        "",
        f"{report['count']} {report['split']} images; `tta` averages each image with its "
        f"mirror image. Runtime `{report['backend']}` (the default `auto` choice on this "
        "machine); model time only (decoding excluded).",
        "",
        "| mode | accuracy | macro-F1 | ECE | NLL | called known | ms / image |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, row in report["results"].items():
        lines.append(
            f"| {mode} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | {row['ece']:.4f} | "
            f"{row['nll']:.4f} | {row['known']:.1%} | {row['ms_per_image']:.2f} |"
        )
    lines += [
        "",
        f"Gain: {report['accuracy_gain_points']:+.2f} points of accuracy for "
        f"{report['cost_ratio']:.2f}x the model time.",
    ]
    return "\n".join(lines) + "\n"
