"""A run that trains on its validation split: export fits the temperature and rejection
thresholds on the share of it held out of training, and without one fits neither (issue
13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowerclf.core.package_format import DESCRIPTOR_FILE
from flowerclf.inference.classifier import Classifier
from tests.helpers.packages import train_and_export

pytestmark = pytest.mark.slow

LEAN = ("--tensorrt", "off", "--int8", "none", "--openvino", "off", "--no-triton",
        "--no-mlflow", "--no-gallery")  # fmt: skip


def _open_world(package: Path) -> dict:
    return json.loads((package / DESCRIPTOR_FILE).read_text())["open_world"]


def test_calibration_is_fitted_on_images_the_model_did_not_train_on(tmp_path: Path) -> None:
    trained = train_and_export(
        tmp_path, ["trainer.train_splits=[train,val]", "trainer.calibration_holdout=0.5"], LEAN
    )
    section = _open_world(trained.package)
    manifest = (tmp_path / "data" / "folder" / "manifest.csv").read_text().splitlines()
    val_count = sum(1 for line in manifest[1:] if ",val," in line)
    # half of each class's validation images, the half that did not train
    assert section["calibration"]["count"] == val_count // 2
    assert section["reject"]["method"] and section["reject"]["thresholds"]


def test_a_trained_validation_split_fits_no_temperature_or_threshold(tmp_path: Path) -> None:
    """Fitted on trained images they reject nearly everything new (oxford102_best: all
    6,145 test images), so the package ships uncalibrated, without rejection, and says
    how to get both."""
    trained = train_and_export(
        tmp_path, ["trainer.train_splits=[train,val]", "trainer.calibration_holdout=0.0"], LEAN
    )
    section = _open_world(trained.package)
    assert section["temperature"] == 1.0 and section["reject"] == {}
    assert "trainer.calibration_holdout" in section["reason"]
    with Classifier.load(trained.package, backend="onnx") as classifier:
        described = classifier.info["open_world"]["rejection"]
    assert described["available"] is False and "calibration_holdout" in described["reason"]
