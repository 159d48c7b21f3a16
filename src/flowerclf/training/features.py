"""Cache the frozen trunk's outputs once, so the CPU fast path trains quickly.

Train images are cached under several augmented views (``trainer.cache_views``); val and
test images once with the evaluation transform. The trunk runs through the fastest CPU
runtime installed by default (``auto``: OpenVINO, else ONNX Runtime; both usually much
faster than PyTorch eager on CPU), or through the one named. Each part (a clean pass over
one split, one augmented view) is keyed by what changes its content (manifest, weights,
trunk cut, preprocessing; augmentation, seed and view number for the
augmented views) and reused across runs: a new seed recomputes only the augmented views.
Each build logs its images/s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from flowerclf.core.errors import ConfigError
from flowerclf.core.fs import exclusive_lock
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.models.runners import make_runner, resolve_runtime
from flowerclf.training.seeding import preserved_random_state, seed_everything

log = logging.getLogger(__name__)


@dataclass
class CachedSplit:
    inputs: torch.Tensor  # (N * views, ...) trunk outputs
    labels: torch.Tensor  # (N * views,)
    ids: torch.Tensor  # (N * views,) manifest ids


# Key parts that say which rows are trained on; val and test do not depend on them.
TRAINED_ROWS_KEYS = ("train_splits", "calibration_holdout")


def cache_key(parts: dict[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_trunk_runner(
    trunk: nn.Module, runtime: str, input_size: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function images -> trunk outputs on ``runtime`` (see :func:`make_runner`)."""
    run = make_runner(trunk, runtime, input_size, ["features"])
    return lambda images: run(images)[0]


def _collect(
    loader: Iterable[Any],
    run: Callable[[torch.Tensor], torch.Tensor],
    dtype: torch.dtype,
    desc: str,
) -> CachedSplit:
    outputs, labels, ids = [], [], []
    for images, batch_labels, batch_ids in tqdm(loader, desc=desc, unit="batch"):
        outputs.append(run(images).to(dtype))
        labels.append(batch_labels)
        ids.append(batch_ids)
    return CachedSplit(torch.cat(outputs), torch.cat(labels), torch.cat(ids))


def build_feature_cache(
    trunk: nn.Module,
    datamodule: FlowerDataModule,
    *,
    views: int,
    runtime: str,
    seed: int,
    cache_dir: Path,
    key_parts: dict[str, Any],
    dtype: torch.dtype = torch.float16,
) -> dict[str, CachedSplit]:
    """Compute (or load) trunk outputs.

    Every part is cached on its own, keyed by what changes it: the clean passes
    (``train_eval``, ``val``, ``test``) do not depend on the seed, the view count or the
    augmentation, so another seed, more views or a new head setting reuse them, and
    augmented view ``v`` of seed ``s`` is the same file whatever the view count.

    Args:
        views: passes over the train set (``trainer.cache_views``).
        runtime: ``auto``, ``onnx``, ``openvino`` or ``torch`` (``trainer.feature_runtime``).
        seed: the run's seed; augmented view ``v`` is drawn with ``seed + v``.
        key_parts: everything else that changes the outputs (manifest, weights, cut,
            preprocessing, augmentation, train splits...); ``augment`` and the
            :data:`TRAINED_ROWS_KEYS` are left out of the keys of the parts they cannot
            change.

    Returns:
        ``train_eval``, ``val``, ``test``: one eval-transform pass each, in float32 (so
        cached evaluation matches the real model); ``train``: ``train_eval`` plus
        ``views - 1`` augmented passes, in ``dtype`` (float16 halves the memory).
    """
    if views < 1:
        raise ConfigError(f"trainer.cache_views must be >= 1, got {views}")
    # The fp32 runtimes give the same trunk outputs up to float rounding (parity-tested at
    # 1e-5, far below the float16 the train views are stored in), so the runtime is not part
    # of the keys: a cache built with ONNX Runtime serves a machine that picks OpenVINO. The
    # one that ran is recorded beside each part.
    runtime = resolve_runtime(runtime)
    # One process builds the missing parts, however many want them: the processes of a DDP
    # run (all of them start here, under torchrun or SLURM at the same moment) and runs
    # started together wait on the lock, then load what the first one wrote.
    cache_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(cache_dir / "build.lock"):
        return _build(trunk, datamodule, views, runtime, seed, cache_dir, key_parts, dtype)


def _build(
    trunk: nn.Module,
    datamodule: FlowerDataModule,
    views: int,
    runtime: str,
    seed: int,
    cache_dir: Path,
    key_parts: dict[str, Any],
    dtype: torch.dtype,
) -> dict[str, CachedSplit]:
    builder = _CacheBuilder(trunk, datamodule, runtime, cache_dir)
    common = dict(key_parts)
    # Which rows are trained on (train splits, a calibration hold-out) changes the train
    # parts only: val and test are shared by every run on the same network.
    trained_rows = {k: v for k, v in common.items() if k in TRAINED_ROWS_KEYS}
    clean = {k: v for k, v in common.items() if k not in ("augment", *TRAINED_ROWS_KEYS)}
    result = {
        "val": builder.get({**clean, "split": "val"}, "val"),
        "test": builder.get({**clean, "split": "test"}, "test"),
        "train_eval": builder.get({**clean, "split": "train_eval", **trained_rows}, "train_eval"),
    }
    parts = [result["train_eval"]]
    for view in range(1, views):
        # The draw depends on the seed and the view separately (the loader's generator
        # is seeded with both), so both are in the key.
        key = {**common, "split": "train", "seed": seed, "view": view, "dtype": str(dtype)}
        parts.append(builder.get(key, "train", seed=seed + view, offset=view, dtype=dtype))
    result["train"] = CachedSplit(
        torch.cat([p.inputs.to(dtype) for p in parts]),
        torch.cat([p.labels for p in parts]),
        torch.cat([p.ids for p in parts]),
    )
    if builder.computed:
        log.info("trunk outputs: computed %s, reused the rest", ", ".join(builder.computed))
    return result


class _CacheBuilder:
    """Loads cached parts, computing (and saving) the missing ones with one trunk runner."""

    def __init__(
        self, trunk: nn.Module, datamodule: FlowerDataModule, runtime: str, cache_dir: Path
    ) -> None:
        self.trunk, self.datamodule, self.runtime = trunk, datamodule, runtime
        self.cache_dir = cache_dir
        self.computed: list[str] = []
        self._run: Callable[[torch.Tensor], torch.Tensor] | None = None

    def get(
        self,
        parts: dict[str, Any],
        split: str,
        *,
        seed: int | None = None,
        offset: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> CachedSplit:
        path = self.cache_dir / f"{cache_key(parts)}.pt"
        if path.is_file():
            return _load(path)
        # Training after this must draw the same random numbers whether the part was
        # computed now or loaded from disk: computing reseeds (views) and draws
        # (DataLoader worker seeds), so the generators are put back afterwards.
        with preserved_random_state():
            self.datamodule.setup()
            if seed is not None:
                # Each augmented view is its own reproducible draw, with or without workers.
                seed_everything(seed)
            loader = self.datamodule.loader(split, seed_offset=offset)
            label = f"cache {split}" + (f" view {offset + 1}" if offset else "")
            started = time.perf_counter()
            computed = _collect(loader, self._runner(), dtype, label)
            seconds = time.perf_counter() - started
        log.info(
            "trunk cache %s built with %s: %d images in %.1f s, %.1f images/s (decode, "
            "augment, trunk)", label.removeprefix("cache "), self.runtime,
            len(computed.labels), seconds, len(computed.labels) / max(seconds, 1e-9),
        )  # fmt: skip
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _save(path, computed)
        described = {**parts, "built_with": self.runtime, "seconds": round(seconds, 1)}
        path.with_suffix(".json").write_text(json.dumps(described, indent=2, default=str))
        self.computed.append(label.removeprefix("cache "))
        return computed

    def _runner(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self._run is None:
            self._run = make_trunk_runner(self.trunk, self.runtime, self.datamodule.spec.input_size)
        return self._run


def _save(path: Path, split: CachedSplit) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"inputs": split.inputs, "labels": split.labels, "ids": split.ids}, tmp)
    tmp.replace(path)


def _load(path: Path) -> CachedSplit:
    data = torch.load(path, map_location="cpu", weights_only=True)
    return CachedSplit(data["inputs"], data["labels"], data["ids"])


def features_dataset(split: CachedSplit) -> torch.utils.data.TensorDataset:
    """A dataset of ``(trunk output as float32, label, id)`` for the Lightning loop."""
    return _FloatTensorDataset(split.inputs, split.labels, split.ids)


class _FloatTensorDataset(torch.utils.data.TensorDataset):
    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        inputs, labels, ids = super().__getitem__(index)
        return inputs.float(), labels, ids
