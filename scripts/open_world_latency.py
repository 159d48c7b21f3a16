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
from collections.abc import Callable

import numpy as np

from flowerclf import Classifier
from flowerclf.core.open_set import METHODS
from flowerclf.core.package_format import load_package
from flowerclf.inference.backends import create_backend


def p50_ms(function: Callable[[np.ndarray], object], inputs: list[np.ndarray], runs: int) -> float:
    function(inputs[0])  # warm-up
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        function(inputs[i % len(inputs)])
        samples.append(time.perf_counter() - started)
    return 1000 * statistics.median(samples)


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
    network = p50_ms(create_backend(package, "onnx", args.threads).run, inputs, args.runs)
    print(f"network only (probabilities, embeddings): p50 {network:.2f} ms")
    for method in METHODS:
        with Classifier.load(args.model, threads=args.threads, reject_method=method) as clf:
            full = p50_ms(clf.run_arrays, inputs, args.runs)
        print(
            f"+ calibration + {method:<11} p50 {full:.2f} ms ({100 * (full / network - 1):+.1f} %)"
        )


if __name__ == "__main__":
    main()
