"""Torch, OpenVINO and ONNX backends of an exported package agree on 50 real flower photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from flowerclf import Classifier
from tests.helpers.packages import TrainedPackage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PACKAGE_ENV = "FLOWERCLF_TEST_PACKAGE"  # optionally check a real exported package as well


def _real_photos(shared_data: Path, count: int = 50) -> list[Path]:
    photos = sorted((shared_data / "tf_flowers").rglob("*.jpg"))
    step = max(1, len(photos) // count)
    return photos[::step][:count]  # spread over every class folder


@pytest.mark.parametrize("source", ["fixture", "env"])
def test_torch_and_onnx_agree_on_50_real_photos(
    source: str, model_package: TrainedPackage, shared_data: Path
) -> None:
    package = model_package.package if source == "fixture" else os.environ.get(PACKAGE_ENV)
    if package is None:
        pytest.skip(f"set {PACKAGE_ENV}=<exported package> to check a real model too")
    photos = _real_photos(shared_data)
    assert len(photos) == 50
    onnx_probs = Classifier.load(package, backend="onnx").predict_proba(photos)
    torch_probs = Classifier.load(package, backend="torch").predict_proba(photos)
    assert (onnx_probs.argmax(1) == torch_probs.argmax(1)).all()
    assert float(np.abs(onnx_probs - torch_probs).max()) <= 1e-4


@pytest.mark.parametrize("source", ["fixture", "env"])
def test_openvino_and_onnx_agree_on_50_real_photos(
    source: str, request: pytest.FixtureRequest, shared_data: Path
) -> None:
    pytest.importorskip("openvino")
    package = os.environ.get(PACKAGE_ENV)
    if source == "fixture":
        package = request.getfixturevalue("model_package").package
    if package is None:
        pytest.skip(f"set {PACKAGE_ENV}=<exported package> to check a real model too")
    photos = _real_photos(shared_data)
    assert len(photos) == 50
    onnx_probs = Classifier.load(package, backend="onnx").predict_proba(photos)
    with Classifier.load(package, backend="openvino") as openvino:
        assert openvino.backend_name == "openvino"
        openvino_probs = openvino.predict_proba(photos)
        single = openvino.predict_proba(photos[0])  # batch 1: another compiled shape
    assert (onnx_probs.argmax(1) == openvino_probs.argmax(1)).all()
    assert float(np.abs(onnx_probs - openvino_probs).max()) <= 1e-4
    assert float(np.abs(onnx_probs[0] - single).max()) <= 1e-4
