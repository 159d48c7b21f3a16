"""A DataModule over a folder dataset prepared in a test (simple_cnn at 32 px, batch 4)."""

from __future__ import annotations

from pathlib import Path

from flowerclf.config import compose_config
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.models.preprocessing import spec_from_model_config


def folder_datamodule(root: Path, *extra: str) -> FlowerDataModule:
    """The DataModule of ``data=folder`` prepared under ``root`` (not set up), with
    ``extra`` Hydra overrides."""
    cfg = compose_config(
        ["data=folder", "data.source=x", f"data.root={root}", "data.batch_size=4",
         "data.num_workers=0", "model=simple_cnn", "model.preprocess.input_size=32", *extra]
    )  # fmt: skip
    return FlowerDataModule.from_config(cfg, spec_from_model_config(cfg.model))
