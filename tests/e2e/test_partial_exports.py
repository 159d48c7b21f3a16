"""Real exports of the tiny trained run with parts left out, and a failing check: the
package holds exactly what the options asked for, and a failed export leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flowerclf import Classifier
from flowerclf.core.errors import ExportError
from flowerclf.core.open_set import OPEN_SET_FILE
from flowerclf.core.package_format import (
    DESCRIPTOR_FILE,
    EMBEDDINGS_FILE,
    ONNX_INT8_FILE,
    load_package,
)
from flowerclf.export import steps as export_steps
from flowerclf.export.options import ExportOptions
from flowerclf.export.package_writer import export_package
from flowerclf.export.steps import TENSORRT_OFF_REASON
from tests.helpers.packages import TrainedPackage

pytestmark = pytest.mark.slow

# Every optional part off: the package is weights, ONNX, embeddings, config and metrics.
MINIMAL = {"int8": "none", "openvino": "off", "tensorrt": "off", "triton": False,
           "mlflow": False, "gallery": False}  # fmt: skip


def test_minimal_export_writes_only_the_asked_for_files_with_the_same_descriptor_keys(
    model_package: TrainedPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A chunk that is not a multiple of the ONNX batch: the index must not depend on it.
    monkeypatch.setattr(export_steps, "IMAGE_CHUNK", 7)
    options = ExportOptions(**MINIMAL, data_root=str(model_package.root / "data"))
    package = export_package(str(model_package.checkpoint), tmp_path / "minimal", options)

    descriptor = package.descriptor
    assert descriptor["files"] == {
        "weights": "weights.safetensors", "onnx": "model.onnx", "embeddings": EMBEDDINGS_FILE,
        "config": "config.yaml", "metrics": "metrics.json",
        "open_set": OPEN_SET_FILE,  # calibration + rejection are in every package (issue 13)
    }  # fmt: skip
    assert sorted(p.name for p in package.root.iterdir()) == sorted(
        [*descriptor["files"].values(), DESCRIPTOR_FILE]
    )
    assert not (package.root / ONNX_INT8_FILE).exists()
    assert set(descriptor["checks"]) == {"onnx_parity", "tensorrt"}
    assert descriptor["checks"]["tensorrt"]["reason"] == TENSORRT_OFF_REASON
    full = json.loads((model_package.package / DESCRIPTOR_FILE).read_text())
    assert list(descriptor) == [key for key in full if key != "mlflow"]
    assert descriptor["model"] == full["model"] and descriptor["outputs"] == full["outputs"]

    ours = np.load(package.require("embeddings"))
    reference = np.load(model_package.package / EMBEDDINGS_FILE)
    np.testing.assert_array_equal(ours["ids"], reference["ids"])
    np.testing.assert_allclose(ours["embeddings"], reference["embeddings"], atol=1e-5)


def test_a_failing_parity_check_stops_the_export_and_leaves_nothing_at_out(
    model_package: TrainedPackage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real_check = export_steps.check_parity

    def impossible_tolerance(*args: object, **kwargs: object):
        return real_check(*args, **kwargs, atol=-1.0)  # type: ignore[arg-type]

    monkeypatch.setattr(export_steps, "check_parity", impossible_tolerance)
    out = tmp_path / "never"
    options = ExportOptions(**MINIMAL, data_root=str(model_package.root / "data"))
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export_package(str(model_package.checkpoint), out, options)
    assert list(tmp_path.iterdir()) == []  # neither the package nor its staging directory
    load_package(model_package.package)  # the fixture's package is untouched


def test_dynamic_int8_step_writes_its_model_without_calibration(
    model_package: TrainedPackage, tmp_path: Path
):
    options = ExportOptions(
        **(MINIMAL | {"int8": "dynamic"}), data_root=str(model_package.root / "data")
    )
    package = export_package(str(model_package.checkpoint), tmp_path / "dynamic", options)
    assert package.descriptor["files"]["onnx_int8"] == ONNX_INT8_FILE
    check = package.descriptor["checks"]["int8"]
    assert check["method"] == "dynamic" and check["calibration_images"] == 0
    assert check["num_images"] > 0 and 0 <= check["int8_accuracy"] <= 1
    image = sorted(model_package.images.rglob("*.jpg"))[0]
    assert Classifier.load(package.root, backend="onnx_int8").predict(image).predicted_class
