"""A finished training run, loaded back: its trained network and the dataset it saw.

Shared by evaluation and export, which both start from ``<run id | checkpoint>``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerclf.core.errors import RunNotFoundError
from flowerclf.core.preprocess import PreprocessSpec
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.tracking import resolve_checkpoint, unsafe_checkpoint_error
from flowerclf.training.module import FlowerClassifier


@dataclass
class TrainedRun:
    """A trained model loaded from a checkpoint, with the run it came from."""

    module: FlowerClassifier
    checkpoint: Path
    run_id: str | None

    @property
    def config(self) -> dict[str, Any]:
        return self.module.config


def load_trained(target: str) -> TrainedRun:
    """Run id or checkpoint -> the trained module (on CPU) and its run id."""
    checkpoint, run_id = resolve_checkpoint(target)
    try:  # plain data only: a checkpoint fetched from an artifact store must not run code
        module = FlowerClassifier.load_from_checkpoint(
            checkpoint, map_location="cpu", pretrained=False, input_mode="image", weights_only=True
        )
    except pickle.UnpicklingError as exc:
        raise unsafe_checkpoint_error(checkpoint, exc) from None
    return TrainedRun(module, Path(checkpoint), run_id or module.config.get("run", {}).get("id"))


def run_datamodule(
    config: dict[str, Any],
    spec: PreprocessSpec,
    data_root: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> FlowerDataModule:
    """The prepared dataset a run was trained on (``data_root`` if it moved), set up."""
    data_cfg = config["data"]
    prepared = Path(data_root or data_cfg["root"]).expanduser() / data_cfg["name"]
    if not (prepared / "manifest.csv").is_file():
        raise RunNotFoundError(
            f"the run's prepared dataset is not at {prepared} (no manifest.csv): pass "
            f"data.root=<dir holding {data_cfg['name']}/>, or prepare it with the run's data "
            f"settings and seed"
        )
    datamodule = FlowerDataModule(
        prepared,
        spec,
        batch_size=batch_size or int(data_cfg["batch_size"]),
        num_workers=int(data_cfg["num_workers"]) if num_workers is None else num_workers,
        seed=int(config["seed"]),
        train_splits=tuple(config["trainer"].get("train_splits", ["train"])),
    )
    datamodule.setup()
    return datamodule
