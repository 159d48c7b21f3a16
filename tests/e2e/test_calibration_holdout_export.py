"""A run that trains on its validation split and holds a share of it out: export fits the
temperature and rejection thresholds on that share, and says so (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowerclf.core.package_format import DESCRIPTOR_FILE
from tests.helpers.packages import train_and_export

pytestmark = pytest.mark.slow

LEAN = ("--tensorrt", "off", "--int8", "none", "--openvino", "off", "--no-triton",
        "--no-mlflow", "--no-gallery")  # fmt: skip


def _open_world(package: Path) -> dict:
    return json.loads((package / DESCRIPTOR_FILE).read_text())["open_world"]


@pytest.mark.parametrize(
    ("holdout", "held_out"), [("0.0", False), ("0.5", True)], ids=["trained-val", "held-out"]
)
def test_calibration_is_fitted_on_images_the_model_did_not_train_on(
    tmp_path: Path, holdout: str, held_out: bool
) -> None:
    trained = train_and_export(
        tmp_path, ["trainer.train_splits=[train,val]", f"trainer.calibration_holdout={holdout}"],
        LEAN,
    )  # fmt: skip
    section = _open_world(trained.package)
    assert section["reject"]["fitted_on_training_images"] is not held_out
    manifest = (tmp_path / "data" / "folder" / "manifest.csv").read_text().splitlines()
    val_count = sum(1 for line in manifest[1:] if ",val," in line)
    count = section["calibration"]["count"]
    # half of each class's validation images, or (no hold-out) all of them, trained on
    assert count == (val_count // 2 if held_out else val_count)
