"""The LightningDataModule: manifest in, seeded train/val/test DataLoaders out."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from flowerclf.core.imaging import load_rgb
from flowerclf.core.preprocess import PreprocessSpec
from flowerclf.data.manifest import (
    DATASET_FILE,
    ManifestRow,
    manifest_sha256,
    read_classes,
    read_manifest,
)
from flowerclf.data.prepare import resolve_root
from flowerclf.data.transforms import (
    AugmentSettings,
    EvalTransform,
    build_mixup,
    build_train_transform,
)

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class ManifestDataset(Dataset[tuple[torch.Tensor, int, int]]):
    """Images of one split: ``(tensor, label, manifest id)``."""

    def __init__(
        self,
        raw_dir: Path,
        rows: Sequence[ManifestRow],
        transform: Callable[[Any], torch.Tensor],
    ) -> None:
        self.raw_dir = raw_dir
        self.rows = list(rows)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        row = self.rows[index]
        image = load_rgb(self.raw_dir / row.path)
        return self.transform(image), row.label, row.id


def prepared_raw_dir(prepared_dir: Path) -> Path:
    """The raw directory a prepared dataset's manifest paths are relative to."""
    info_path = prepared_dir / DATASET_FILE
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{info_path} not found; prepare the dataset first with `flowerclf data prepare`"
        )
    info = json.loads(info_path.read_text(encoding="utf-8"))
    return prepared_dir.parent / info["raw_dir"]


# What the DataModule reads from the typed config (flowerclf.config.schema.FlowerclfConfig).
# Declared here because the data layer sits below the config layer; the typed config
# satisfies these protocols as it is.


class LoaderSettings(Protocol):
    """The ``data`` section: where the prepared dataset is and how batches are loaded."""

    @property
    def root(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def num_workers(self) -> int: ...
    @property
    def pin_memory(self) -> bool: ...
    @property
    def persistent_workers(self) -> bool: ...


class TrainSplitSettings(Protocol):
    """The part of the ``trainer`` section the data needs."""

    @property
    def train_splits(self) -> Sequence[str]: ...
    @property
    def calibration_holdout(self) -> float: ...


class LabelSmoothingSettings(Protocol):
    """The part of the ``loss`` section MixUp/CutMix targets need."""

    @property
    def label_smoothing(self) -> float: ...


class DataModuleSettings(Protocol):
    """A whole typed config, as far as the DataModule reads it."""

    @property
    def data(self) -> LoaderSettings: ...
    @property
    def augment(self) -> AugmentSettings: ...
    @property
    def trainer(self) -> TrainSplitSettings: ...
    @property
    def loss(self) -> LabelSmoothingSettings: ...
    @property
    def seed(self) -> int: ...


def holdout_rows(rows: Sequence[ManifestRow], share: float, seed: int) -> list[ManifestRow]:
    """A seeded ``share`` of each class's ``rows`` (at least one per class with two or
    more rows, never all of a class's rows)."""
    by_class: dict[int, list[ManifestRow]] = {}
    for row in sorted(rows, key=lambda r: r.id):
        by_class.setdefault(row.label, []).append(row)
    rng = random.Random(seed)
    picked = []
    for label in sorted(by_class):
        members = by_class[label]
        count = min(len(members) - 1, max(1, round(share * len(members))))
        picked += rng.sample(members, count) if count > 0 else []
    return sorted(picked, key=lambda r: r.id)


class FlowerDataModule(L.LightningDataModule):
    """Serves a prepared dataset to Lightning.

    Built by :meth:`from_config` from the typed config; every setting is explicit here
    (no defaults: those live in the packaged Hydra configs).

    Args:
        prepared_dir: ``<data.root>/<data.name>`` as written by ``flowerclf data prepare``.
        spec: preprocessing of the model being trained.
        augment: the ``augment`` config section.
        seed: seeds the training shuffle and (through Lightning) the workers.
        train_splits: manifest splits used for training (e.g. ``["train", "val"]`` to
            train on train+val for the final Oxford-102 protocol).
        label_smoothing: applied to the soft targets of MixUp/CutMix.
        calibration_holdout: with ``val`` among ``train_splits``, the share of each class's
            validation images kept out of training (seeded by ``seed``), so that export
            and evaluation fit the temperature and rejection thresholds on images the
            model has not seen (:meth:`calibration_rows`); 0 trains on all of them.
    """

    def __init__(
        self,
        prepared_dir: str | Path,
        spec: PreprocessSpec,
        augment: AugmentSettings,
        *,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        persistent_workers: bool,
        seed: int,
        train_splits: Sequence[str],
        label_smoothing: float,
        calibration_holdout: float,
    ) -> None:
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.spec = spec
        self.augment = augment
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = seed
        self.train_splits = tuple(train_splits)
        self.label_smoothing = label_smoothing
        if not 0.0 <= calibration_holdout < 1.0:
            raise ValueError(f"calibration_holdout must be in [0, 1), got {calibration_holdout}")
        self.calibration_holdout = calibration_holdout
        self.classes: list[str] = []
        self.rows: list[ManifestRow] = []
        self.mixup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None
        self.mixup = None
        self._datasets: dict[str, ManifestDataset] = {}

    @classmethod
    def from_config(cls, cfg: DataModuleSettings, spec: PreprocessSpec) -> FlowerDataModule:
        """Build from the typed config (``data``, ``augment``, ``seed``,
        ``trainer.train_splits`` and ``loss.label_smoothing``)."""
        data = cfg.data
        return cls(
            resolve_root(data.root) / data.name,
            spec,
            cfg.augment,
            batch_size=data.batch_size,
            num_workers=data.num_workers,
            pin_memory=data.pin_memory,
            persistent_workers=data.persistent_workers,
            seed=cfg.seed,
            train_splits=tuple(cfg.trainer.train_splits),
            label_smoothing=cfg.loss.label_smoothing,
            calibration_holdout=cfg.trainer.calibration_holdout,
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def manifest_sha256(self) -> str:
        return manifest_sha256(self.prepared_dir)

    def prepare_data(self) -> None:
        # Preparation is its own CLI step; here we only fail early and clearly.
        read_classes(self.prepared_dir)

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        self.classes = read_classes(self.prepared_dir)
        self.rows = read_manifest(self.prepared_dir)
        raw_dir = prepared_raw_dir(self.prepared_dir)
        eval_transform = EvalTransform(self.spec)
        train_transform = build_train_transform(self.spec, self.augment)
        train_rows = self.training_rows()
        self._datasets = {
            "train": ManifestDataset(raw_dir, train_rows, train_transform),
            "train_eval": ManifestDataset(raw_dir, train_rows, eval_transform),
            "val": ManifestDataset(raw_dir, self.split_rows("val"), eval_transform),
            "calibration": ManifestDataset(raw_dir, self.calibration_rows(), eval_transform),
            "test": ManifestDataset(raw_dir, self.split_rows("test"), eval_transform),
            "all": ManifestDataset(raw_dir, self.rows, eval_transform),
        }
        self.mixup = build_mixup(self.augment, self.num_classes, self.label_smoothing)
        log.info(
            "data: %s, train %d / val %d / test %d",
            self.prepared_dir.name,
            len(self._datasets["train"]),
            len(self._datasets["val"]),
            len(self._datasets["test"]),
        )

    def split_rows(self, split: str) -> list[ManifestRow]:
        return [r for r in self.rows if r.split == split]

    @property
    def _held_out_ids(self) -> frozenset[int]:
        """Ids of the validation rows kept out of training (see ``calibration_holdout``)."""
        if "val" not in self.train_splits or self.calibration_holdout <= 0:
            return frozenset()
        return frozenset(
            r.id for r in holdout_rows(self.split_rows("val"), self.calibration_holdout, self.seed)
        )

    def training_rows(self) -> list[ManifestRow]:
        """The rows the model trains on: ``train_splits`` less the calibration hold-out."""
        held_out = self._held_out_ids
        return [r for r in self.rows if r.split in self.train_splits and r.id not in held_out]

    def calibration_rows(self) -> list[ManifestRow]:
        """Rows to fit calibration and rejection thresholds on: the validation split when
        it is not trained on, else its held-out share (empty without one)."""
        if "val" not in self.train_splits:
            return self.split_rows("val")
        held_out = self._held_out_ids
        return [r for r in self.split_rows("val") if r.id in held_out]

    @property
    def calibration_is_held_out(self) -> bool:
        """Whether :meth:`calibration_rows` are images the model was not trained on."""
        return "val" not in self.train_splits or bool(self._held_out_ids)

    def dataset(self, name: str) -> ManifestDataset:
        """``train`` (augmented), ``train_eval``, ``val``, ``calibration`` (see
        :meth:`calibration_rows`), ``test`` or ``all`` (eval transform)."""
        self.setup()
        return self._datasets[name]

    def _loader(self, name: str, *, shuffle: bool, seed_offset: int = 0) -> DataLoader[Any]:
        from lightning.fabric.utilities.seed import pl_worker_init_function

        dataset = self.dataset(name)
        # The generator seeds both the shuffle and the workers' augmentation streams.
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * seed_offset)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            worker_init_fn=pl_worker_init_function if self.num_workers else None,
            generator=generator,
            # Drop a trailing batch of one: BatchNorm cannot train on it.
            drop_last=shuffle and len(dataset) % self.batch_size == 1,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[Any]:
        return self._loader("all", shuffle=False)

    def loader(self, name: str, seed_offset: int = 0) -> DataLoader[Any]:
        """An unshuffled loader over any named dataset (see :meth:`dataset`);
        ``seed_offset`` gives another reproducible augmentation draw."""
        return self._loader(name, shuffle=False, seed_offset=seed_offset)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Apply MixUp/CutMix to training batches on the device (targets become soft)."""
        trainer = getattr(self, "trainer", None)
        if self.mixup is not None and trainer is not None and trainer.training:
            images, labels, ids = batch
            if images.shape[0] % 2 == 0:  # timm's batch mode needs an even batch
                images, targets = self.mixup(images, labels)
                return images, targets, ids
        return batch
