"""Batches are decoded in a pool sized to the CPUs, one batch ahead, in order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from flowerclf import Classifier
from flowerclf.core.errors import ImageDecodeError
from flowerclf.core.hardware import MAX_DECODE_THREADS, decode_threads
from tests.helpers.colour_package import COLOURS, solid


def test_decode_pool_is_sized_to_the_cpus() -> None:
    assert decode_threads() == max(1, min(os.cpu_count() or 1, MAX_DECODE_THREADS))


def test_batches_keep_their_order_and_errors_in_place(colour_package: Path) -> None:
    colours = list(COLOURS) * 3  # 9 images in batches of 2: one batch is decoded ahead
    items: list[object] = [solid(c) for c in colours]
    items.insert(3, b"not an image")
    with Classifier.load(colour_package, backend="onnx", batch_size=2) as classifier:
        batches = list(classifier.preprocess_batches(items))  # type: ignore[arg-type]
        assert [len(b) for b in batches] == [2, 2, 2, 2, 2]
        flat = [a for batch in batches for a in batch]
        assert isinstance(flat[3], ImageDecodeError)
        assert all(isinstance(a, np.ndarray) for i, a in enumerate(flat) if i != 3)
        results = classifier.predict_each(items)  # type: ignore[arg-type]
    answers = [r.predicted_class for r in results if not isinstance(r, ImageDecodeError)]
    assert isinstance(results[3], ImageDecodeError) and answers == colours
