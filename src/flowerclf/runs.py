"""A finished training run, loaded back: its trained network and the dataset it saw.

Shared by evaluation and export, which both start from ``<run id | checkpoint>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerclf.config.saved import load_run_config
from flowerclf.config.schema import FlowerclfConfig, RunConfig
from flowerclf.core.errors import RunNotFoundError
from flowerclf.core.preprocess import PreprocessSpec
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.tracking import resolve_checkpoint
from flowerclf.training.module import FlowerClassifier


@dataclass
class TrainedRun:
    """A trained model loaded from a checkpoint, with the run it came from."""

    module: FlowerClassifier
    checkpoint: Path
    run_id: str | None

    @property
    def settings(self) -> RunConfig:
        """The run's typed config (keys an older checkpoint lacks filled from the defaults)."""
        return self.module.config

    @property
    def config(self) -> dict[str, Any]:
        """The same config as plain values: what packages and reports write down."""
        return self.module.config.to_dict()


def load_trained(target: str) -> TrainedRun:
    """Run id or checkpoint -> the trained module (on CPU) and its run id."""
    checkpoint, run_id = resolve_checkpoint(target)
    module = FlowerClassifier.load_from_checkpoint(
        checkpoint, map_location="cpu", pretrained=False, input_mode="image", weights_only=False
    )
    return TrainedRun(module, Path(checkpoint), run_id or module.config.run.id)


def run_datamodule(
    config: FlowerclfConfig | Mapping[str, Any],
    spec: PreprocessSpec,
    data_root: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> FlowerDataModule:
    """The prepared dataset a run was trained on (``data_root`` if it moved), set up.

    ``config`` is the run's typed config, or the plain dict it recorded; ``batch_size`` and
    ``num_workers`` replace the run's loader settings when given.
    """
    cfg = config if isinstance(config, FlowerclfConfig) else load_run_config(config)
    data = cfg.data
    prepared = Path(data_root or data.root or "").expanduser() / data.name
    if not (prepared / "manifest.csv").is_file():
        raise RunNotFoundError(
            f"the run's prepared dataset is not at {prepared} (no manifest.csv): pass "
            f"data.root=<dir holding {data.name}/>, or prepare it with the run's data "
            f"settings and seed"
        )
    loader = data.updated(
        root=str(prepared.parent),
        batch_size=batch_size or data.batch_size,
        num_workers=data.num_workers if num_workers is None else num_workers,
    )
    datamodule = FlowerDataModule.from_config(cfg.updated(data=loader), spec)
    datamodule.setup()
    return datamodule
