"""NumPy's BLAS runs single-threaded beside the model (issue 16): idle OpenBLAS threads spin
after a product and made OpenVINO batches up to 1.9x slower on 2 cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from flowerclf import Classifier
from flowerclf.core import hardware
from flowerclf.core.hardware import SingleThreadedBlas, single_threaded_blas
from flowerclf.core.open_set import OpenWorld
from tests.helpers.colour_package import solid


def blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture
def several_blas_threads() -> set[int]:
    """NumPy's BLAS thread counts as they are (not set here: OpenBLAS ignores a later limit
    set from another thread once the main thread has set one)."""
    threads = blas_threads()
    if not threads or threads == {1}:
        pytest.skip(f"NumPy's BLAS already runs on one thread here ({threads or 'none'})")
    return threads


def test_limits_blas_to_one_thread_and_restores(several_blas_threads: set[int]) -> None:
    guard = SingleThreadedBlas()
    with guard:
        assert blas_threads() == {1}
    assert blas_threads() == several_blas_threads


def test_overlapping_users_share_the_limit_until_the_last_leaves(
    several_blas_threads: set[int],
) -> None:
    # Two users that overlap (as the service's threads do), in this order: first in,
    # second in, first out, second out. The first to leave must not lift the limit.
    guard = SingleThreadedBlas()
    guard.__enter__()
    guard.__enter__()
    guard.__exit__(None, None, None)
    assert blas_threads() == {1}
    guard.__exit__(None, None, None)
    assert blas_threads() == several_blas_threads


def test_classifier_scores_with_one_blas_thread(
    colour_package: Path, several_blas_threads: set[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[set[int]] = []
    original = OpenWorld.scores

    def recording(self: OpenWorld, logits: np.ndarray, embeddings: np.ndarray) -> object:
        seen.append(blas_threads())
        return original(self, logits, embeddings)

    monkeypatch.setattr(OpenWorld, "scores", recording)
    with Classifier.load(colour_package, backend="onnx") as clf:
        clf.predict([solid("red"), solid("blue")])
        clf.predict(solid("green"), tta=True)
    assert seen == [{1}, {1}]
    assert blas_threads() == several_blas_threads
    assert single_threaded_blas._users == 0


def test_without_threadpoolctl_the_guard_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # The MLflow pyfunc carries flowerclf's code into environments of its own.
    monkeypatch.setattr(hardware, "_blas_controller", lambda: None)
    before = blas_threads()
    guard = SingleThreadedBlas()
    with guard, guard:
        assert blas_threads() == before
    assert guard._users == 0
