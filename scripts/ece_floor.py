"""How small can a test split's ECE be? The noise floor of the calibration measurement.

    python scripts/ece_floor.py --model models/tf_flowers [--data-root data] [--out F.json]

ECE (15 equal-width bins, as ``flowerclf evaluate`` reports it) is measured on a finite
test split, so even a perfectly calibrated model does not score 0: each bin's accuracy is
an average of a few hundred coin flips. This script scores the package's test split with
its calibrated probabilities (what the package ships), then simulates a perfectly
calibrated model with exactly those confidences: each image is right with probability equal
to its confidence. It prints the measured ECE next to the simulated ECE's mean and 5-95 %
range, and the share of simulated draws at or above the measured one (a one-sided p-value:
small means the package is measurably mis-calibrated; large means the measurement cannot
tell it from a perfect one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flowerclf.core.imaging import load_rgb
from flowerclf.core.package_format import load_package
from flowerclf.evaluation.ood import package_test_rows
from flowerclf.inference.classifier import Classifier
from flowerclf.metrics.classification import ECE_BINS, expected_calibration_error

DRAWS = 2000


def binned_ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE from top-1 confidences and correctness, binned as ``expected_calibration_error``
    bins (equal width, right-closed)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges, confidence, side="left") - 1  # bin i is (edge i, edge i+1]
    inside = index >= 0  # a confidence of exactly 0 is in no bin, as there
    counts = np.bincount(index[inside], minlength=bins)
    gap = np.bincount(index[inside], weights=(correct.astype(np.float64) - confidence)[inside],
                      minlength=bins)  # fmt: skip
    return float(np.abs(gap[counts > 0]).sum() / len(confidence))


def perfect_calibration_eces(
    confidence: np.ndarray, draws: int = DRAWS, seed: int = 0, bins: int = ECE_BINS
) -> np.ndarray:
    """ECE of ``draws`` simulated perfectly calibrated models with these confidences."""
    rng = np.random.default_rng(seed)
    return np.array(
        [binned_ece(confidence, rng.random(len(confidence)) < confidence, bins)
         for _ in range(draws)]
    )  # fmt: skip


def test_probabilities(model: str, data_root: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The package's calibrated probabilities on its test split, and the labels."""
    package = load_package(model)
    rows, raw, _ = package_test_rows(package, data_root, limit=10**9)
    probabilities = []
    with Classifier.load(package.root) as classifier:
        for start in range(0, len(rows), classifier.batch_size):
            chunk = rows[start : start + classifier.batch_size]
            batch = np.stack([classifier.preprocess(load_rgb(raw / r.path)) for r in chunk])
            logits, _ = classifier.run_logits(batch)
            probabilities.append(classifier.open_world.probabilities(logits))
    return np.concatenate(probabilities), np.asarray([r.label for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model package directory")
    parser.add_argument("--data-root", help="directory holding the prepared dataset")
    parser.add_argument("--draws", type=int, default=DRAWS)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    probabilities, labels = test_probabilities(args.model, args.data_root)
    measured, _ = expected_calibration_error(probabilities, labels)
    confidence = probabilities.max(axis=1).astype(np.float64)
    # The simulation bins like the measurement: the same ECE on the real outcomes.
    assert abs(binned_ece(confidence, probabilities.argmax(1) == labels) - measured) < 1e-6
    floor = perfect_calibration_eces(confidence, args.draws)
    report = {
        "model": str(args.model),
        "split": "test",
        "images": len(labels),
        "accuracy": round(float((probabilities.argmax(1) == labels).mean()), 4),
        "mean_confidence": round(float(confidence.mean()), 4),
        "ece": round(measured, 4),
        "perfectly_calibrated_ece_mean": round(float(floor.mean()), 4),
        "perfectly_calibrated_ece_p05": round(float(np.percentile(floor, 5)), 4),
        "perfectly_calibrated_ece_p95": round(float(np.percentile(floor, 95)), 4),
        "share_of_draws_at_or_above_measured": round(float((floor >= measured).mean()), 4),
        "draws": args.draws,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
