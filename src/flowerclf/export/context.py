"""What every export step sees (:class:`ExportContext`) and what each one returns.

A step is a small function ``ExportContext -> StepResult``: it writes its files into the
staging directory and returns their descriptor keys and the checks it ran. The context
carries the trained run, its prepared dataset, the options and the staging directory,
and gives the steps the dataset's images preprocessed, a bounded chunk at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowerclf.config.schema import RunConfig
from flowerclf.core.package_format import ONNX_FILE
from flowerclf.core.preprocess import PreprocessSpec
from flowerclf.data.datamodule import FlowerDataModule, prepared_raw_dir
from flowerclf.data.manifest import ManifestRow
from flowerclf.export.dataset_images import iter_preprocessed, preprocess_rows
from flowerclf.export.options import ExportOptions
from flowerclf.runs import TrainedRun

log = logging.getLogger(__name__)

# Dataset images decoded and run at a time by the steps that go through a whole split:
# bounds their memory (a multiple of the ONNX batch, so the batches are those of one pass
# over all images).
IMAGE_CHUNK = 256


@dataclass(frozen=True)
class StepResult:
    """What one step added to the package, as descriptor entries.

    Attributes:
        files: ``files`` entries: key -> file or directory name inside the package.
        checks: ``checks`` entries: key -> the report of a check the step ran.
        entries: other top-level descriptor entries (``metrics``, ``mlflow``).
    """

    files: dict[str, str] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportContext:
    """The trained run, its dataset and where the package is being written.

    Attributes:
        run: the trained run (network on CPU, its config, checkpoint and run id).
        run_tags: the run's MLflow tags; None when there is no run or the store lacks it.
        datamodule: the run's prepared dataset, set up.
        staging: the directory being filled; renamed to ``--out`` when every step passed.
        options: what to put in the package.
        say: progress messages for the user.
    """

    run: TrainedRun
    run_tags: dict[str, str] | None
    datamodule: FlowerDataModule
    staging: Path
    options: ExportOptions
    say: Callable[[str], None] = log.info
    started: float = field(default_factory=time.perf_counter)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    # --- the trained model ----------------------------------------------------------------

    @cached_property
    def net(self) -> nn.Module:
        """The trained network, ``images -> (logits, embeddings)``, in eval mode."""
        return self.run.module.net.eval()

    @property
    def config(self) -> dict[str, Any]:
        """The run's config as plain values (what the package's config.yaml records)."""
        return self.run.config

    @property
    def settings(self) -> RunConfig:
        """The run's typed config."""
        return self.run.settings

    @property
    def classes(self) -> list[str]:
        return list(self.run.module.classes)

    @property
    def spec(self) -> PreprocessSpec:
        return self.run.module.spec

    @property
    def tracking_uri(self) -> str | None:
        return self.settings.run.tracking_uri

    @property
    def package_name(self) -> str:
        return f"{self.settings.data.name}-{self.settings.model.name}"

    @cached_property
    def embedding_dim(self) -> int:
        """Width of the network's embeddings (one forward pass on a blank image)."""
        size = self.spec.input_size
        with torch.inference_mode():
            _, embeddings = self.net(torch.zeros(1, 3, size, size))
        return int(embeddings.shape[1])

    @property
    def onnx_path(self) -> Path:
        """The fp32 ONNX model in the staging directory (written by the ``onnx`` step)."""
        return self.staging / ONNX_FILE

    # --- the dataset ----------------------------------------------------------------------

    @cached_property
    def raw_dir(self) -> Path:
        return prepared_raw_dir(self.datamodule.prepared_dir)

    @cached_property
    def eval_split(self) -> str:
        """``test`` when the dataset has one, else ``val``: never images the model trained on."""
        return "test" if self.datamodule.split_rows("test") else "val"

    @cached_property
    def eval_rows(self) -> list[ManifestRow]:
        return self.datamodule.split_rows(self.eval_split)

    def eval_images(self, limit: int) -> np.ndarray:
        """The first ``limit`` evaluation images, preprocessed (in memory)."""
        rows = self.eval_rows[:limit]
        return preprocess_rows(rows, self.raw_dir, self.spec, f"decode {self.eval_split}")

    def iter_eval_images(self) -> Iterator[np.ndarray]:
        """The whole evaluation split, preprocessed, ``IMAGE_CHUNK`` images at a time."""
        return iter_preprocessed(
            self.eval_rows, self.raw_dir, self.spec, f"decode {self.eval_split}", IMAGE_CHUNK
        )

    @cached_property
    def eval_labels(self) -> np.ndarray:
        return np.asarray([r.label for r in self.eval_rows])

    @cached_property
    def train_rows(self) -> list[ManifestRow]:
        return self.datamodule.training_rows()

    def elapsed_s(self) -> float:
        return round(time.perf_counter() - self.started, 1)


@dataclass(frozen=True)
class ExportStep:
    """One named part of the export.

    Attributes:
        name: what the step makes (``weights``, ``onnx``, ``int8``...).
        run: writes the step's files into ``context.staging`` and returns them.
        wanted: whether these options ask for the step.
        reads_package: the step loads the package being written, so the descriptor is
            written before it runs.
    """

    name: str
    run: Callable[[ExportContext], StepResult]
    wanted: Callable[[ExportOptions], bool] = lambda _options: True
    reads_package: bool = False
