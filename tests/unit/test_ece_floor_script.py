"""scripts/ece_floor.py: the simulated ECE bins exactly like the measured one, and a
perfectly calibrated model's ECE on a finite split is not 0."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from flowerclf.metrics.classification import expected_calibration_error
from tests.helpers.scripts import load_script


@pytest.fixture(scope="module")
def ece_floor() -> ModuleType:
    return load_script("ece_floor")


def test_binned_ece_equals_the_evaluation_ece(ece_floor: ModuleType) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(500, 5))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities[0] = [1.0, 0, 0, 0, 0]  # a confidence exactly on a bin edge
    probabilities[1] = [0.2, 0.2, 0.2, 0.2, 0.2]  # on the 3rd edge (0.2)
    labels = rng.integers(0, 5, size=500)
    measured, _ = expected_calibration_error(probabilities, labels)
    correct = probabilities.argmax(axis=1) == labels
    assert ece_floor.binned_ece(probabilities.max(axis=1), correct) == pytest.approx(measured)


def test_a_perfectly_calibrated_model_has_a_floor_that_shrinks_with_the_split(
    ece_floor: ModuleType,
) -> None:
    small = ece_floor.perfect_calibration_eces(np.full(367, 0.94), draws=300)
    large = ece_floor.perfect_calibration_eces(np.full(6149, 0.94), draws=300)
    # One bin, n coin flips at p = 0.94: E|mean - p| ~ sqrt(2 p (1 - p) / (pi n)).
    assert small.mean() == pytest.approx(np.sqrt(2 * 0.94 * 0.06 / (np.pi * 367)), rel=0.15)
    assert large.mean() < small.mean() / 3
