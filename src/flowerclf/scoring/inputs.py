"""What ``flowerclf score --input`` names, as one list of image paths in a stable order.

The order decides which partition each image lands in, so a rerun must list the same
paths in the same order to resume: directories are walked and sorted, globs sorted, a text
file and a parquet ``path`` column keep their own order.
"""

from __future__ import annotations

import glob
from pathlib import Path

from flowerclf.core.errors import UsageError
from flowerclf.core.imaging import list_images

PATH_COLUMN = "path"
TEXT_SUFFIXES = frozenset({".txt", ".lst", ".list"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})


def resolve_inputs(spec: str) -> list[str]:
    """Image paths named by ``spec``: a directory (walked recursively, image suffixes,
    sorted), a glob (sorted), a text file of paths (one a line; blank lines and ``#``
    comments skipped; relative paths are relative to the file's directory) or a parquet
    file or directory with a ``path`` column.

    Raises:
        UsageError: nothing matches, or a parquet input has no ``path`` column.
    """
    path = Path(spec).expanduser()
    if path.is_dir() and _is_parquet_dataset(path):
        found = _read_parquet_paths(path)
    elif path.is_dir():
        found = [str(p) for p in list_images(path)]
    elif path.is_file() and path.suffix.lower() in PARQUET_SUFFIXES:
        found = _read_parquet_paths(path)
    elif path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
        found = _read_text_paths(path)
    elif path.is_file():
        found = [str(path)]
    elif glob.has_magic(spec):
        found = [m for m in sorted(glob.glob(spec, recursive=True)) if Path(m).is_file()]  # noqa: PTH207
    else:
        raise UsageError(f"--input {spec}: no such file, directory or matching glob")
    if not found:
        raise UsageError(f"--input {spec}: no images found")
    return found


def _is_parquet_dataset(directory: Path) -> bool:
    """A directory of parquet files (e.g. an earlier ``score`` output) rather than images."""
    return any(
        p.suffix.lower() in PARQUET_SUFFIXES and not p.name.startswith(("_", "."))
        for p in directory.iterdir()
    )


def _read_text_paths(path: Path) -> list[str]:
    base = path.parent
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        candidate = Path(entry).expanduser()
        found.append(str(candidate if candidate.is_absolute() else base / candidate))
    return found


def _read_parquet_paths(path: Path) -> list[str]:
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet")
    if PATH_COLUMN not in dataset.schema.names:
        raise UsageError(
            f"--input {path}: the parquet data has no {PATH_COLUMN!r} column "
            f"(columns: {', '.join(dataset.schema.names)})"
        )
    column = dataset.to_table(columns=[PATH_COLUMN]).column(PATH_COLUMN)
    return [str(p) for p in column.to_pylist() if p]
