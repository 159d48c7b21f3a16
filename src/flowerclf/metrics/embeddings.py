"""Saved image embeddings and k-nearest-neighbour accuracy over them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flowerclf.data.manifest import ManifestRow

EMBEDDINGS_FILE = "embeddings.npz"


def save_embeddings(
    path: Path,
    embeddings: np.ndarray,
    ids: np.ndarray,
    rows_by_id: Mapping[int, ManifestRow],
    classes: Sequence[str],
) -> Path:
    """Write an ``.npz`` with embeddings (float32, L2-normalised) and, per row, the manifest
    id, label, split and path, plus the class list: everything similarity search needs."""
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    rows = [rows_by_id[int(i)] for i in ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        embeddings=embeddings[order].astype(np.float32),
        ids=ids.astype(np.int64),
        labels=np.asarray([r.label for r in rows], dtype=np.int64),
        splits=np.asarray([r.split for r in rows]),
        paths=np.asarray([r.path for r in rows]),
        classes=np.asarray(list(classes)),
    )
    return path


def knn_predict(
    query: np.ndarray, reference: np.ndarray, reference_labels: np.ndarray, k: int, num_classes: int
) -> np.ndarray:
    """Cosine-similarity kNN with similarity-weighted votes; returns predicted labels."""
    k = min(k, len(reference))
    predictions = np.empty(len(query), dtype=np.int64)
    for start in range(0, len(query), 1024):  # bounded memory for large sets
        sims = query[start : start + 1024] @ reference.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(top), num_classes))
        top_sims = np.take_along_axis(sims, top, axis=1)
        np.add.at(
            votes,
            (np.arange(len(top))[:, None], reference_labels[top]),
            np.maximum(top_sims, 0) + 1e-6,
        )
        predictions[start : start + len(top)] = votes.argmax(axis=1)
    return predictions


def knn_accuracy(
    query: np.ndarray,
    query_labels: np.ndarray,
    reference: np.ndarray,
    reference_labels: np.ndarray,
    k: int,
    num_classes: int,
) -> float:
    """Accuracy of kNN classification of ``query`` against ``reference`` embeddings."""
    if len(query) == 0 or len(reference) == 0:
        return 0.0
    predicted = knn_predict(query, reference, reference_labels, k, num_classes)
    return float((predicted == query_labels).mean())
