"""``flowerclf-model.json``, written from what the export steps returned.

The writer's half of :mod:`flowerclf.core.package_format` (the reader): class names,
preprocessing, graph signature, files with their checksums, the export checks and where
the model came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flowerclf import __version__
from flowerclf.core.package_format import (
    DESCRIPTOR_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    INPUT_NAME,
    SHA256_TREE_KEY,
    WEIGHTS_FILE,
    sha256_file,
)
from flowerclf.export.context import ExportContext, StepResult


def build_descriptor(context: ExportContext, results: Iterable[StepResult]) -> dict[str, Any]:
    """The descriptor of the package in ``context.staging``, from the steps' results in order."""
    files: dict[str, str] = {}
    checks: dict[str, Any] = {}
    entries: dict[str, Any] = {}
    for result in results:
        files |= result.files
        checks |= result.checks
        entries |= result.entries
    staging, spec, classes = context.staging, context.spec, context.classes
    model_cfg = context.settings.model
    embedding_dim = context.embedding_dim
    datamodule = context.datamodule
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": context.package_name,
        "version": context.run.run_id or sha256_file(staging / WEIGHTS_FILE)[:12],
        "created": context.created,
        "flowerclf_version": __version__,
        "classes": classes,
        "preprocess": spec.to_dict(),
        "model": {
            "name": model_cfg.name,
            "arch": model_cfg.arch,
            # What rebuilds the network (the torch backend): a member's embedding width;
            # an ensemble's embeddings output is its members' side by side.
            "embedding_dim": model_cfg.embedding_dim,
            "drop_rate": float(model_cfg.drop_rate),
            "pretrained": False,
            "weights": None,
            "members": model_cfg.members,
            "member_tail_blocks": model_cfg.member_tail_blocks,
        },
        "inputs": {INPUT_NAME: {"dtype": "float32", "shape": [-1, 3, spec.input_size,
                                                               spec.input_size]}},
        "outputs": {
            "probabilities": {"dtype": "float32", "shape": [-1, len(classes)]},
            "logits": {"dtype": "float32", "shape": [-1, len(classes)]},
            "embeddings": {"dtype": "float32", "shape": [-1, embedding_dim]},
        },
        "files": files,
        "sha256": {key: sha256_file(staging / name) for key, name in files.items()
                   if (staging / name).is_file()},
        SHA256_TREE_KEY: _tree_checksums(staging, files),
        "metrics": entries.pop("metrics", {}),
        "checks": checks,
        "source": {
            "run_id": context.run.run_id,
            "tracking_uri": context.tracking_uri,
            "checkpoint": str(context.run.checkpoint),
            "dataset": context.settings.data.name,
            "manifest_sha256": datamodule.manifest_sha256,
            "train_splits": list(datamodule.train_splits),
            "image_root": str(context.raw_dir),
        },
        "export_time_s": context.elapsed_s(),
        **entries,  # e.g. "mlflow": where the pyfunc model was saved and logged
    }  # fmt: skip


def write_descriptor(context: ExportContext, results: Iterable[StepResult]) -> dict[str, Any]:
    """Write ``flowerclf-model.json`` into the staging directory; returns it."""
    descriptor = build_descriptor(context, results)
    (context.staging / DESCRIPTOR_FILE).write_text(json.dumps(descriptor, indent=2) + "\n")
    return descriptor


def _tree_checksums(staging: Path, files: dict[str, str]) -> dict[str, str]:
    """sha256 of every file inside the exported directories (gallery/, triton/...), by
    path relative to the package: loading verifies them like the named files."""
    digests: dict[str, str] = {}
    for name in files.values():
        directory = staging / name
        if directory.is_dir():
            for path in sorted(p for p in directory.rglob("*") if p.is_file()):
                digests[path.relative_to(staging).as_posix()] = sha256_file(path)
    return digests
