"""``flowerclf index build``: a similarity index over the embeddings of a ``score`` output.

Reads the parquet dataset that ``flowerclf score --embeddings`` wrote (rows with an
``error`` are left out), and writes a similarity index directory
(:mod:`flowerclf.inference.similarity`): the rows in the package's ``embeddings.npz``
format (ids are row numbers; the label of a row is its ``predicted_class``, or its
``label`` column when the data has one) and the FAISS index over them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from flowerclf.core.errors import UsageError
from flowerclf.inference.similarity import AnnSettings, write_index_dir
from flowerclf.scoring.rows import CLASSES_KEY, MODEL_KEY

EMBEDDING_COLUMN = "embedding"
LABEL_COLUMNS = ("label", "predicted_class")


def build_gallery_index(
    embeddings: str | Path, out: str | Path, settings: AnnSettings
) -> dict[str, Any]:
    """Index the embeddings of the parquet file or dataset ``embeddings`` into ``out``;
    returns the index description (``index.json``).

    Raises:
        UsageError: the data has no ``embedding`` column (score without ``--embeddings``)
            or no usable row.
    """
    source = Path(embeddings).expanduser()
    if not source.exists():
        raise UsageError(f"--embeddings {source}: no such file or directory")
    dataset = ds.dataset(source, format="parquet")
    names = dataset.schema.names
    if EMBEDDING_COLUMN not in names:
        raise UsageError(
            f"--embeddings {source} has no {EMBEDDING_COLUMN!r} column: score with "
            "`flowerclf score --embeddings`"
        )
    label_column = next((c for c in LABEL_COLUMNS if c in names), None)
    columns = ["path", EMBEDDING_COLUMN, *([label_column] if label_column else [])]
    table = dataset.to_table(columns=columns, filter=pc.field(EMBEDDING_COLUMN).is_valid())
    if table.num_rows == 0:
        raise UsageError(f"--embeddings {source}: no row has an embedding")
    vectors = _normalised(table.column(EMBEDDING_COLUMN))
    classes, labels = _labels(table, label_column, dataset.schema)
    meta = write_index_dir(
        Path(out).expanduser(),
        embeddings=vectors,
        ids=np.arange(len(vectors), dtype=np.int64),
        labels=labels,
        paths=np.asarray(table.column("path").to_pylist(), dtype=str),
        classes=classes,
        settings=settings,
        source={"embeddings": str(source), "model": _model(dataset.schema)},
    )
    return meta


def _normalised(column: pa.ChunkedArray) -> np.ndarray:
    """``(N, D)`` float32 with unit rows (score writes unit rows; other sources may not)."""
    lengths = pc.list_value_length(column)
    shortest, longest = pc.min_max(lengths).values()
    if shortest != longest:
        raise UsageError("the embedding column holds vectors of different lengths")
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
    vectors = flat.reshape(len(column), longest.as_py())
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _labels(table: pa.Table, column: str | None, schema: pa.Schema) -> tuple[list[str], np.ndarray]:
    if column is None:
        return [""], np.zeros(table.num_rows, dtype=np.int64)
    values = [str(v) if v is not None else "" for v in table.column(column).to_pylist()]
    metadata = schema.metadata or {}
    known = json.loads(metadata[CLASSES_KEY]) if CLASSES_KEY in metadata else []
    classes = list(known) + sorted(set(values) - set(known))
    position = {name: i for i, name in enumerate(classes)}
    return classes, np.asarray([position[v] for v in values], dtype=np.int64)


def _model(schema: pa.Schema) -> dict[str, Any] | None:
    metadata = schema.metadata or {}
    return json.loads(metadata[MODEL_KEY]) if MODEL_KEY in metadata else None
