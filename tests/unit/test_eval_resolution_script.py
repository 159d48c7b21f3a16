"""scripts/eval_resolution.py: the settings it tries and the val-side choice among them."""

from __future__ import annotations

from types import ModuleType

import pytest

from flowerclf.core.preprocess import PreprocessSpec
from tests.helpers.scripts import load_script

SPEC = PreprocessSpec(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875)


@pytest.fixture(scope="module")
def resolution() -> ModuleType:
    return load_script("eval_resolution")


def test_settings_start_with_the_trained_one_then_grow_with_and_without_the_crop(
    resolution: ModuleType,
) -> None:
    tried = [(s.input_size, s.crop_pct) for s in resolution.settings(SPEC)]
    assert tried[0] == (224, 0.875)
    assert tried == [(size, crop) for size in (224, 256, 288, 320) for crop in (0.875, 1.0)]
    kept = resolution.settings(SPEC)[3]
    assert (kept.mean, kept.std, kept.interpolation) == (SPEC.mean, SPEC.std, "bicubic")
    uncropped = PreprocessSpec(224, SPEC.mean, SPEC.std, "bicubic", 1.0)
    assert len(resolution.settings(uncropped)) == 4  # no setting twice


def test_choice_takes_the_best_val_accuracy_and_breaks_ties_towards_the_trained_setting(
    resolution: ModuleType,
) -> None:
    assert resolution.choose([0.9, 0.9, 0.9]) == 0
    assert resolution.choose([0.9, 0.92, 0.92, 0.91]) == 1
