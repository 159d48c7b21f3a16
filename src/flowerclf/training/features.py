"""Cache the frozen trunk's outputs once, so the CPU fast path trains quickly.

Train images are cached under several augmented views (``trainer.cache_views``); val and
test images once with the evaluation transform. The trunk runs through the fastest CPU
runtime installed by default (``auto``: OpenVINO, else ONNX Runtime; both usually much
faster than PyTorch eager on CPU), or through the one named. Caches are keyed by everything
that changes their content (manifest, weights, trunk cut, preprocessing, augmentation,
views, seed, the runtime that ran) and reused across runs; each build logs its images/s.
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
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.models.runners import make_runner, resolve_runtime
from flowerclf.training.seeding import preserved_random_state, seed_everything

log = logging.getLogger(__name__)


@dataclass
class CachedSplit:
    inputs: torch.Tensor  # (N * views, ...) trunk outputs
    labels: torch.Tensor  # (N * views,)
    ids: torch.Tensor  # (N * views,) manifest ids


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

    Args:
        views: passes over the train set (``trainer.cache_views``).
        runtime: ``auto``, ``onnx``, ``openvino`` or ``torch`` (``trainer.feature_runtime``).
        seed: the run's seed; augmented view ``v`` is drawn with ``seed + v``.
        key_parts: everything else that changes the outputs (manifest, weights, cut,
            preprocessing, augmentation...); with the arguments above it names the cache.

    Returns:
        ``train_eval``, ``val``, ``test``: one eval-transform pass each, in float32 (so
        cached evaluation matches the real model); ``train``: ``train_eval`` plus
        ``views - 1`` augmented passes, in ``dtype`` (float16 halves the memory).
    """
    if views < 1:
        raise ConfigError(f"trainer.cache_views must be >= 1, got {views}")
    runtime = resolve_runtime(runtime)  # the key names the runtime that ran, never "auto"
    parts = {**key_parts, "views": views, "runtime": runtime, "seed": seed, "dtype": str(dtype)}
    key = cache_key(parts)
    directory = cache_dir / key
    names = ("train_eval", "val", "test", "train")
    if all((directory / f"{name}.pt").is_file() for name in names):
        log.info("using cached trunk outputs %s", directory)
        return {name: _load(directory / f"{name}.pt") for name in names}
    # Training after this must draw the same random numbers whether the cache was built now
    # or loaded from disk: building reseeds (views) and draws (DataLoader worker seeds), so
    # the generators are put back afterwards.
    started = time.perf_counter()
    with preserved_random_state():
        result = _compute_cache(
            trunk, datamodule, views=views, runtime=runtime, dtype=dtype, seed=seed
        )
    seconds = time.perf_counter() - started
    images = sum(len(result[name].labels) for name in ("train", "val", "test"))
    log.info(
        "trunk cache built with %s: %d images in %.1f s, %.1f images/s (decode, augment, trunk)",
        runtime, images, seconds, images / max(seconds, 1e-9),
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    for name, split in result.items():
        _save(directory / f"{name}.pt", split)
    (directory / "key.json").write_text(json.dumps(parts, indent=2, default=str))
    return result


def _compute_cache(
    trunk: nn.Module,
    datamodule: FlowerDataModule,
    *,
    views: int,
    runtime: str,
    dtype: torch.dtype,
    seed: int,
) -> dict[str, CachedSplit]:
    datamodule.setup()
    run = make_trunk_runner(trunk, runtime, datamodule.spec.input_size)
    result = {
        name: _collect(datamodule.loader(name), run, torch.float32, f"cache {name}")
        for name in ("train_eval", "val", "test")
    }
    parts = [result["train_eval"]]
    for view in range(1, views):
        # Each augmented view is its own reproducible draw, with or without workers.
        seed_everything(seed + view)
        loader = datamodule.loader("train", seed_offset=view)
        parts.append(_collect(loader, run, dtype, f"cache train view {view + 1}/{views}"))
    result["train"] = CachedSplit(
        torch.cat([p.inputs.to(dtype) for p in parts]),
        torch.cat([p.labels for p in parts]),
        torch.cat([p.ids for p in parts]),
    )
    return result


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
