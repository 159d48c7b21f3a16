"""scripts/knn_fusion.py: the kNN vote distribution and the val-side choice of (k, w)."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from tests.helpers.scripts import load_script


@pytest.fixture(scope="module")
def fusion() -> ModuleType:
    return load_script("knn_fusion")


def test_votes_are_similarity_weighted_distributions_that_agree_with_knn_predict(
    fusion: ModuleType,
) -> None:
    from flowerclf.metrics.embeddings import knn_predict

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 8))
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    labels = rng.integers(0, 3, size=40)
    query = reference[:10] + 0.1 * rng.normal(size=(10, 8))
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    votes = fusion.knn_votes(query, reference, labels, 5, 3)
    assert votes.shape == (10, 3)
    np.testing.assert_allclose(votes.sum(axis=1), 1.0)
    assert (votes.argmax(axis=1) == knn_predict(query, reference, labels, 5, 3)).all()
    # One neighbour: all of its vote on that neighbour's class.
    nearest = fusion.knn_votes(reference[:4], reference, labels, 1, 3)
    assert (nearest.argmax(axis=1) == labels[:4]).all() and np.allclose(nearest.max(axis=1), 1)


def test_fusion_weight_moves_predictions_from_classifier_to_knn(fusion: ModuleType) -> None:
    probabilities = np.array([[0.6, 0.4], [0.6, 0.4]])
    votes = {5: np.array([[0.0, 1.0], [1.0, 0.0]])}
    grid = fusion.accuracy_grid(probabilities, votes, np.array([1, 0]))
    weights = list(fusion.WEIGHTS)
    assert grid[5][weights.index(0.0)] == 0.5  # the classifier alone: one of two right
    assert grid[5][weights.index(1.0)] == 1.0  # kNN alone: both


def test_choice_prefers_val_accuracy_then_the_smaller_weight_then_the_runs_k(
    fusion: ModuleType,
) -> None:
    n = len(fusion.WEIGHTS)
    flat = {5: [0.9] * n, 20: [0.9] * n}
    assert fusion.choose(flat, own_k=20) == (20, 0.0)
    better = {5: [0.9] * n, 20: [0.9] * 3 + [0.95] * (n - 3)}
    assert fusion.choose(better, own_k=5) == (20, fusion.WEIGHTS[3])
