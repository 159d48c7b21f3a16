"""What computing the open-set scores with one BLAS thread buys, measured in one process.

    python scripts/blas_threads_check.py --model models/tf_flowers --images data/raw/tf_flowers

Times the same images three ways with the BLAS guard off, on, then off again (so drift of
the machine shows): the runtime alone (``run_logits``), the runtime plus scores
(``run_arrays``), and ``predict_each`` on the image files. Prints one line per setting.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import flowerclf.inference.classifier as classifier_module
from flowerclf.core.hardware import cpu_description
from flowerclf.core.imaging import list_images


def images_per_second(work: Callable[[], object], count: int, repeats: int = 5) -> float:
    """Best of ``repeats`` timed runs after one warm-up."""
    work()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    paths = [str(p) for p in list_images(args.images)[: args.count]]
    clf = classifier_module.Classifier.load(args.model, batch_size=args.batch_size)
    arrays = np.stack([clf.preprocess(p) for p in paths])
    batches = [arrays[i : i + args.batch_size] for i in range(0, len(arrays), args.batch_size)]
    guard = classifier_module.single_threaded_blas
    print(f"{cpu_description()}, backend {clf.backend_name}, {len(paths)} images")
    settings = [("BLAS threads free", contextlib.nullcontext()), ("one BLAS thread", guard),
                ("BLAS threads free again", contextlib.nullcontext())]  # fmt: skip
    for label, setting in settings:
        # The module-level name run_arrays looks up: swapped here only, to compare.
        classifier_module.single_threaded_blas = setting  # type: ignore[assignment]
        model = images_per_second(lambda: [clf.run_logits(b) for b in batches], len(paths))
        scored = images_per_second(lambda: [clf.run_arrays(b) for b in batches], len(paths))
        files = images_per_second(lambda: clf.predict_each(paths), len(paths))
        print(f"{label:24} run_logits {model:6.1f}  run_arrays {scored:6.1f}  "
              f"predict_each on files {files:6.1f} img/s")  # fmt: skip
    classifier_module.single_threaded_blas = guard
    clf.close()


if __name__ == "__main__":
    main()
