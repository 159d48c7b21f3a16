"""trainer.calibration_holdout: a recipe that trains on its validation split keeps a seeded
share of it out of training, and calibration is fitted on that share (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowerclf.cli.main import main
from flowerclf.data.datamodule import FlowerDataModule, holdout_rows
from flowerclf.data.manifest import ManifestRow
from flowerclf.training.features import TRAINED_ROWS_KEYS
from tests.helpers.datamodules import folder_datamodule
from tests.helpers.images import build_folder_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("holdout")
    source = build_folder_dataset(tmp / "src", per_class=40)
    root = tmp / "data"
    code = main(["-q", "data", "prepare", "data=folder", f"data.source={source}",
                 f"data.root={root}"])  # fmt: skip
    assert code == 0
    return root


def _datamodule(root: Path, *extra: str) -> FlowerDataModule:
    datamodule = folder_datamodule(root, *extra)
    datamodule.setup()
    return datamodule


def _rows(per_class: dict[int, int]) -> list[ManifestRow]:
    rows, next_id = [], 0
    for label, count in per_class.items():
        for _ in range(count):
            rows.append(ManifestRow(
                id=next_id, path=f"{label}/{next_id}.jpg", label=label, class_name=str(label),
                split="val", sha256="", width=1, height=1,
            ))  # fmt: skip
            next_id += 1
    return rows


def test_holdout_takes_a_seeded_share_of_every_class() -> None:
    rows = _rows({0: 10, 1: 10, 2: 1, 3: 3})
    picked = holdout_rows(rows, 0.2, seed=7)
    per_class = {label: sum(r.label == label for r in picked) for label in range(4)}
    # 2 of 10; a class of one keeps its image for training; at least one of three.
    assert per_class == {0: 2, 1: 2, 2: 0, 3: 1}
    assert holdout_rows(rows, 0.2, seed=7) == picked
    assert holdout_rows(rows, 0.2, seed=8) != picked


def test_without_val_in_training_calibration_is_the_validation_split(prepared: Path) -> None:
    datamodule = _datamodule(prepared, "trainer.calibration_holdout=0.5")
    assert datamodule.calibration_rows() == datamodule.split_rows("val")
    assert datamodule.calibration_is_held_out
    assert {r.split for r in datamodule.training_rows()} == {"train"}


def test_trained_validation_split_gives_its_held_out_share(prepared: Path) -> None:
    plain = _datamodule(prepared, "trainer.train_splits=[train,val]")
    assert plain.calibration_rows() == [] and not plain.calibration_is_held_out
    held = _datamodule(prepared, "trainer.train_splits=[train,val]",
                       "trainer.calibration_holdout=0.25")  # fmt: skip
    calibration = {r.id for r in held.calibration_rows()}
    trained = {r.id for r in held.training_rows()}
    val = {r.id for r in held.split_rows("val")}
    assert held.calibration_is_held_out and calibration < val
    assert not calibration & trained  # never trained on
    assert trained | calibration == {r.id for r in plain.training_rows()}
    assert len(held.dataset("train")) == len(trained)
    assert len(held.dataset("calibration")) == len(calibration)


def test_the_hold_out_is_part_of_the_train_cache_keys_only() -> None:
    assert "calibration_holdout" in TRAINED_ROWS_KEYS and "train_splits" in TRAINED_ROWS_KEYS
