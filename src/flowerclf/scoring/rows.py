"""The per-image code every engine runs: image paths -> one Arrow table, one row per path.

Columns (see :func:`output_schema`): ``path``, ``predicted_class``, ``confidence``,
``probabilities`` (a list in the order of the class names stored in the schema metadata),
``is_known`` / ``unknown_score`` when the package has unknown-image rejection,
``embedding`` when asked for, and ``error``: null when the row worked, else why the image
could not be read. A bad image never fails the batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from flowerclf import __version__
from flowerclf.core.imaging import ImageDecodeError
from flowerclf.core.package_format import ModelPackage
from flowerclf.inference.classifier import DEFAULT_BATCH_SIZE, Classifier

log = logging.getLogger(__name__)

# Schema metadata keys (bytes, as Arrow stores them).
CLASSES_KEY = b"flowerclf.classes"
MODEL_KEY = b"flowerclf.model"


@dataclass(frozen=True)
class ScorerSettings:
    """How a worker loads its Classifier; small and picklable, shipped to every worker."""

    model: str
    backend: str = "onnx"
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None
    embeddings: bool = False
    verify: bool = True

    def load(self, model_dir: str | None = None) -> ImageScorer:
        """A scorer on the package at ``model_dir`` (default: ``model``)."""
        classifier = Classifier.load(
            model_dir or self.model, backend=self.backend, batch_size=self.batch_size,
            threads=self.threads, verify=self.verify,
        )  # fmt: skip
        return ImageScorer(classifier, embeddings=self.embeddings)


def schema_for(package: ModelPackage, open_set: bool, embeddings: bool) -> pa.Schema:
    """The one schema every partition of a job is written with, whatever the engine:
    ``open_set`` adds ``is_known``/``unknown_score``, ``embeddings`` the ``embedding``."""
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("predicted_class", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("probabilities", pa.list_(pa.float32())),
    ]
    if open_set:
        fields += [pa.field("is_known", pa.bool_()), pa.field("unknown_score", pa.float32())]
    if embeddings:
        fields.append(pa.field("embedding", pa.list_(pa.float32())))
    fields.append(pa.field("error", pa.string()))
    model = {"name": package.name, "version": package.version, "flowerclf": __version__}
    metadata = {CLASSES_KEY: json.dumps(package.classes), MODEL_KEY: json.dumps(model)}
    return pa.schema(fields, metadata=metadata)


class ImageScorer:
    """Scores lists of image paths with one Classifier (one ONNX Runtime session)."""

    def __init__(self, classifier: Classifier, embeddings: bool = False) -> None:
        self.classifier = classifier
        self.embeddings = embeddings
        open_set = classifier.open_world.method is not None
        self.schema = schema_for(classifier.package, open_set, embeddings)

    def score(self, paths: Sequence[str]) -> pa.Table:
        """One row per path, in order; unreadable images give rows with ``error`` set."""
        columns: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        batch_size = self.classifier.batch_size
        for start in range(0, len(paths), batch_size):
            self._score_batch(paths[start : start + batch_size], columns)
        return pa.Table.from_pydict(columns, schema=self.schema)

    def _score_batch(self, paths: Sequence[str], columns: dict[str, list[Any]]) -> None:
        arrays = [self._preprocess(path) for path in paths]
        good = [a for a in arrays if isinstance(a, np.ndarray)]
        outputs = self.classifier.run_arrays(np.stack(good)) if good else None
        row = 0
        for path, array in zip(paths, arrays, strict=True):
            columns["path"].append(path)
            if outputs is None or isinstance(array, str):
                self._append_error(columns, str(array))
                continue
            self._append_result(columns, outputs, row)
            row += 1

    def _preprocess(self, path: str) -> np.ndarray | str:
        """The model input for one file, or the message that goes in its ``error`` cell."""
        try:
            return self.classifier.preprocess(path)
        except ImageDecodeError as exc:
            return exc.reason
        except Exception as exc:  # a decoder bug on one file must not stop a million-image job
            log.exception("scoring %s failed", path)
            return f"internal error: {type(exc).__name__}: {exc}"

    def _append_result(self, columns: dict[str, list[Any]], outputs: Any, row: int) -> None:
        probabilities = outputs.probabilities[row]
        best = int(np.argmax(probabilities))
        columns["predicted_class"].append(self.classifier.classes[best])
        columns["confidence"].append(float(probabilities[best]))
        columns["probabilities"].append(probabilities.astype(np.float32))
        if "is_known" in columns:
            score = None if outputs.unknown_scores is None else float(outputs.unknown_scores[row])
            columns["is_known"].append(self.classifier.open_world.is_known(score))
            columns["unknown_score"].append(score)
        if self.embeddings:
            columns["embedding"].append(outputs.embeddings[row].astype(np.float32))
        columns["error"].append(None)

    def _append_error(self, columns: dict[str, list[Any]], message: str) -> None:
        for name in columns:
            if name != "path":
                columns[name].append(None)
        columns["error"][-1] = message

    def close(self) -> None:
        self.classifier.close()
