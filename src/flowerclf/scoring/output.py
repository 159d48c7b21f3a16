"""The output of a scoring job: a parquet dataset, one file per partition of the input.

Layout of ``--output DIR``::

    DIR/_flowerclf_score.json   the job: input fingerprint, partition size, model, columns
    DIR/part-00000.parquet      rows of input images 0 .. P-1, in input order
    DIR/part-00001.parquet      rows P .. 2P-1, ...
    DIR/_SUCCESS                written when every partition exists

Each partition is written under a hidden temporary name and renamed into place, so a file
named ``part-*.parquet`` is always complete; a rerun skips those and writes the rest. Names
starting with ``_`` or ``.`` are ignored by parquet readers (pyarrow, pandas, Spark), so
``pandas.read_parquet(DIR)`` reads exactly the rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from flowerclf.core.errors import UsageError
from flowerclf.core.fs import fsync_directory, write_atomic

log = logging.getLogger(__name__)

JOB_FILE = "_flowerclf_score.json"
SUCCESS_FILE = "_SUCCESS"
LOCK_FILE = "_flowerclf_score.lock"
PARTITION_DIGITS = 5
ERROR_COLUMN = "error"


def partition_name(index: int) -> str:
    return f"part-{index:0{PARTITION_DIGITS}d}.parquet"


@dataclass(frozen=True)
class Partition:
    """One output file's share of the input: images ``start .. start + len(paths) - 1``."""

    index: int
    start: int
    paths: tuple[str, ...]

    @property
    def name(self) -> str:
        return partition_name(self.index)


@dataclass(frozen=True)
class PartitionResult:
    """What writing (or finding) one partition gave."""

    index: int
    rows: int
    errors: int
    seconds: float = 0.0


def split_partitions(paths: Sequence[str], size: int) -> list[Partition]:
    """Consecutive chunks of ``size`` paths; the last may be shorter."""
    if size < 1:
        raise UsageError("--partition-size must be at least 1")
    return [
        Partition(index, start, tuple(paths[start : start + size]))
        for index, start in enumerate(range(0, len(paths), size))
    ]


@dataclass(frozen=True)
class JobRecord:
    """What a rerun must match to resume into the same directory."""

    inputs_sha256: str
    images: int
    partition_size: int
    partitions: int
    model_name: str
    model_version: str
    backend: str
    columns: tuple[str, ...]

    @classmethod
    def describe(
        cls, paths: Sequence[str], partition_size: int, schema: pa.Schema, model: dict[str, str]
    ) -> JobRecord:
        digest = hashlib.sha256()
        for path in paths:
            digest.update(path.encode("utf-8", "surrogateescape") + b"\n")
        return cls(
            inputs_sha256=digest.hexdigest(),
            images=len(paths),
            partition_size=partition_size,
            partitions=-(-len(paths) // partition_size),
            model_name=model["name"],
            model_version=model["version"],
            backend=model["backend"],
            columns=tuple(schema.names),
        )

    def differences(self, other: JobRecord) -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [key for key in mine if mine[key] != theirs[key]]


class OutputDir:
    """The dataset directory: the job record, finished partitions, atomic writes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def prepare(self, job: JobRecord, overwrite: bool = False) -> None:
        """Record ``job`` in a new or empty directory, or check that the directory holds the
        same job (then finished partitions are kept).

        Raises:
            UsageError: the directory holds another job, or files this module did not write.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        recorded = self.read_job()
        if recorded is not None and not overwrite:
            changed = recorded.differences(job)
            if changed:
                raise UsageError(
                    f"{self.root} holds the output of another scoring job (different "
                    f"{', '.join(changed)}); pass another --output, or --overwrite to replace it"
                )
            self._remove_temporary_files()
            return
        if recorded is None and not overwrite and self._foreign_files():
            raise UsageError(
                f"{self.root} is not empty and holds no scoring job; pass an empty or new "
                "--output, or --overwrite to replace its parquet files"
            )
        self._remove_outputs()
        data = json.dumps(asdict(job), indent=2).encode()
        write_atomic(self.root / JOB_FILE, data)

    def read_job(self) -> JobRecord | None:
        path = self.root / JOB_FILE
        if not path.is_file():
            return None
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            fields["columns"] = tuple(fields["columns"])
            return JobRecord(**fields)
        except (ValueError, TypeError, KeyError) as exc:
            message = f"{path} is damaged ({exc}); pass --overwrite to start again"
            raise UsageError(message) from None

    def _foreign_files(self) -> list[Path]:
        return [p for p in self.root.iterdir() if p.name != LOCK_FILE]

    def _remove_outputs(self) -> None:
        for path in self.root.iterdir():
            is_ours = path.name.startswith(("part-", ".part-")) or path.name in (
                JOB_FILE, SUCCESS_FILE,
            )  # fmt: skip
            if path.is_file() and is_ours:
                path.unlink()

    def _remove_temporary_files(self) -> None:
        """Half-written partitions of a killed run (the caller holds the job's lock)."""
        for path in self.root.glob(".part-*.tmp"):
            path.unlink(missing_ok=True)

    def finished(self, partition: Partition) -> PartitionResult | None:
        """The partition's result if its file is there, whole and of the right length."""
        path = self.root / partition.name
        if not path.is_file():
            return None
        try:
            metadata = pq.ParquetFile(path).metadata
        except (OSError, pa.ArrowException) as exc:
            log.warning("rewriting %s: unreadable (%s)", path.name, exc)
            return None
        if metadata.num_rows != len(partition.paths):
            log.warning("rewriting %s: %d rows, expected %d", path.name, metadata.num_rows,
                        len(partition.paths))  # fmt: skip
            return None
        return PartitionResult(partition.index, metadata.num_rows, _error_rows(path, metadata))

    def write(self, partition: Partition, table: pa.Table) -> None:
        """Write the partition whole or not at all (temporary file, fsync, rename)."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        write_atomic(self.root / partition.name, sink.getvalue().to_pybytes())

    def mark_success(self, summary: dict[str, Any]) -> None:
        write_atomic(self.root / SUCCESS_FILE, json.dumps(summary, indent=2).encode())
        fsync_directory(self.root)

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE


def error_count(table: pa.Table) -> int:
    """Rows of a scored table whose ``error`` is set."""
    return table.num_rows - table.column(ERROR_COLUMN).null_count


def _error_rows(path: Path, metadata: pq.FileMetaData) -> int:
    """Rows whose ``error`` is set: from the footer's statistics when they are there (no
    data read), else from the column itself."""
    names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
    column = names.index(ERROR_COLUMN)
    errors = 0
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group)
        stats = chunk.column(column).statistics
        if stats is None or not stats.has_null_count:
            return error_count(pq.read_table(path, columns=[ERROR_COLUMN]))
        errors += chunk.num_rows - stats.null_count
    return errors
