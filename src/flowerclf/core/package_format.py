"""The model package format: one directory, one JSON descriptor, every file it names.

``flowerclf-model.json`` is the single source of truth for class names and preprocessing;
every runtime (Python API, CLI, REST service, Triton, MLflow) reads them from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerclf.core.errors import PackageError
from flowerclf.core.preprocess import PreprocessSpec

DESCRIPTOR_FILE = "flowerclf-model.json"
FORMAT_NAME = "flowerclf-model"
FORMAT_VERSION = 1

WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
EMBEDDINGS_FILE = "embeddings.npz"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
GALLERY_DIR = "gallery"
TRITON_DIR = "triton"
TENSORRT_FILE = "model.plan"
MLFLOW_DIR = "mlflow_model"

INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "logits", "embeddings")


@dataclass(frozen=True)
class ModelPackage:
    """A loaded descriptor plus the directory it lives in."""

    root: Path
    descriptor: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.descriptor["classes"])

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.descriptor["preprocess"])

    @property
    def name(self) -> str:
        return str(self.descriptor["name"])

    @property
    def version(self) -> str:
        return str(self.descriptor["version"])

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.descriptor.get("metrics", {}))

    def file(self, key: str) -> Path | None:
        """Absolute path of a named file (``onnx``, ``weights``...), or None if not exported."""
        relative = self.descriptor.get("files", {}).get(key)
        return self.root / relative if relative else None

    def require(self, key: str) -> Path:
        path = self.file(key)
        if path is None:
            raise PackageError(f"the model package {self.root} has no {key} export")
        if not path.exists():
            raise PackageError(f"{path} is named in {DESCRIPTOR_FILE} but missing")
        return path

    def public_info(self) -> dict[str, Any]:
        """What a service may show about the model (no local paths)."""
        keep = ("name", "version", "created", "flowerclf_version", "classes", "preprocess",
                "model", "metrics", "checks", "inputs", "outputs")  # fmt: skip
        return {k: self.descriptor[k] for k in keep if k in self.descriptor}


def load_package(path: str | Path) -> ModelPackage:
    """Read and check ``path/flowerclf-model.json``."""
    root = Path(path).expanduser()
    descriptor_path = root / DESCRIPTOR_FILE
    if not root.is_dir():
        raise PackageError(f"model package {root} does not exist or is not a directory")
    if not descriptor_path.is_file():
        raise PackageError(
            f"{root} is not a flowerclf model package: {DESCRIPTOR_FILE} not found "
            f"(create one with `flowerclf export <run id | checkpoint> --out {root}`)"
        )
    try:
        descriptor = json.loads(descriptor_path.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{descriptor_path} is not valid JSON: {exc}") from None
    check_descriptor(descriptor, descriptor_path)
    return ModelPackage(root.resolve(), descriptor)


def check_descriptor(descriptor: Mapping[str, Any], where: Path | str = DESCRIPTOR_FILE) -> None:
    if descriptor.get("format") != FORMAT_NAME:
        raise PackageError(f"{where}: format must be {FORMAT_NAME!r}")
    version = descriptor.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PackageError(
            f"{where}: format_version {version!r} is not supported by this flowerclf "
            f"(reads up to {FORMAT_VERSION}); upgrade flowerclf"
        )
    missing = [
        k for k in ("name", "version", "classes", "preprocess", "files") if k not in descriptor
    ]
    if missing:
        raise PackageError(f"{where}: missing keys {missing}")
    classes = descriptor["classes"]
    if not isinstance(classes, list) or not classes or len(set(classes)) != len(classes):
        raise PackageError(f"{where}: classes must be a non-empty list of unique names")
    try:
        PreprocessSpec.from_dict(descriptor["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"{where}: invalid preprocess spec: {exc}") from None
