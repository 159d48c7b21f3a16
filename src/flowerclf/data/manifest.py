"""The dataset manifest: the single record of which image is in which split with which label.

``manifest.csv`` is written byte-for-byte deterministically (sorted rows, fixed float-free
columns, ``\\n`` line endings), so its sha256 identifies the data version; ``classes.json``
holds the class list in label order, the one source of class names for everything
downstream.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from flowerclf.core.errors import DatasetLayoutError
from flowerclf.core.fs import write_atomic

MANIFEST_FILE = "manifest.csv"
CLASSES_FILE = "classes.json"
DATASET_FILE = "dataset.json"


@dataclass(frozen=True)
class ManifestRow:
    """One usable image. ``path`` is relative to the dataset's raw directory."""

    id: int
    path: str
    label: int
    class_name: str
    split: str
    sha256: str
    width: int
    height: int


COLUMNS = tuple(f.name for f in fields(ManifestRow))


def manifest_bytes(rows: Sequence[ManifestRow]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(astuple(row))
    return buffer.getvalue().encode("utf-8")


def write_manifest(directory: Path, rows: Sequence[ManifestRow], classes: Sequence[str]) -> str:
    """Write ``manifest.csv`` and ``classes.json``; return the manifest's sha256."""
    data = manifest_bytes(rows)
    write_atomic(directory / MANIFEST_FILE, data)
    classes_json = json.dumps({"classes": list(classes)}, indent=2, ensure_ascii=False) + "\n"
    write_atomic(directory / CLASSES_FILE, classes_json.encode("utf-8"))
    return hashlib.sha256(data).hexdigest()


def read_manifest(directory: Path) -> list[ManifestRow]:
    """Read ``manifest.csv`` back into rows."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; prepare the dataset first with `flowerclf data prepare`"
        )
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise DatasetLayoutError(
                f"{path} has columns {reader.fieldnames}, expected {list(COLUMNS)}"
            )
        return [
            ManifestRow(
                id=int(r["id"]),
                path=r["path"],
                label=int(r["label"]),
                class_name=r["class_name"],
                split=r["split"],
                sha256=r["sha256"],
                width=int(r["width"]),
                height=int(r["height"]),
            )
            for r in reader
        ]


def read_classes(directory: Path) -> list[str]:
    """Class names in label order."""
    path = directory / CLASSES_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; prepare the dataset first with `flowerclf data prepare`"
        )
    return list(json.loads(path.read_text(encoding="utf-8"))["classes"])


def manifest_sha256(directory: Path) -> str:
    return hashlib.sha256((directory / MANIFEST_FILE).read_bytes()).hexdigest()
