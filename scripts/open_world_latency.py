"""Single-image latency cost of calibration + unknown-image scoring (issue 13 target: < 5 %).

Times, at batch 1 on the same preprocessed images, the network alone (the backend's
``run``: probabilities and embeddings, what predictions cost before) against the full
``Classifier.run_arrays`` (logits -> calibrated probabilities + unknown score) for each
fitted method, and prints p50 milliseconds and the overhead.

Usage: ``python scripts/open_world_latency.py MODEL_DIR [--runs 200] [--threads N]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from collections.abc import Callable

import numpy as np

from flowerclf import Classifier
from flowerclf.core.open_set import METHODS
from flowerclf.core.package_format import load_package
from flowerclf.inference.backends import create_backend


def paired_p50_ms(
    first: Callable[[np.ndarray], object],
    second: Callable[[np.ndarray], object],
    inputs: list[np.ndarray],
    runs: int,
) -> tuple[float, float]:
    """p50 of each function, calls interleaved so that load from other processes on a
    shared machine hits both alike."""
    first(inputs[0]), second(inputs[0])  # warm-up
    samples: tuple[list[float], list[float]] = ([], [])
    for i in range(runs):
        for function, times in ((first, samples[0]), (second, samples[1])):
            started = time.perf_counter()
            function(inputs[i % len(inputs)])
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(samples[0]), 1000 * statistics.median(samples[1])


def scoring_ms(clf: Classifier, batch: np.ndarray) -> float:
    """Calibration + unknown score of one image's outputs alone (best of 5 x 20 runs)."""
    logits, embeddings = clf.run_logits(batch)
    world = clf.open_world

    def score() -> None:
        world.probabilities(logits)
        world.scores(logits, embeddings)

    return 1000 * min(timeit.repeat(score, number=20, repeat=5)) / 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    package = load_package(args.model)
    size = package.spec.input_size
    inputs = [rng.normal(size=(1, 3, size, size)).astype(np.float32) for _ in range(16)]
    network = create_backend(package, "onnx", args.threads).run  # the path before issue 13
    for method in METHODS:
        with Classifier.load(args.model, threads=args.threads, reject_method=method) as clf:
            base, full = paired_p50_ms(network, clf.run_arrays, inputs, args.runs)
            alone = scoring_ms(clf, inputs[0])
        print(f"{method:<11} network p50 {base:.2f} ms, with calibration + score {full:.2f} ms; "
              f"calibration + score alone {alone:.3f} ms = {100 * alone / base:.1f} % of the "
              "network")  # fmt: skip


if __name__ == "__main__":
    main()
