"""``Classifier``: load a model package, predict, embed, find similar training images.

>>> from flowerclf import Classifier
>>> clf = Classifier.load("models/tf_flowers")            # ONNX Runtime by default
>>> clf.predict("rose.jpg").to_dict()
{'predicted_class': 'roses', 'confidence': 0.97, 'all_predictions': {...}}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from flowerclf.core.errors import UsageError
from flowerclf.core.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError
from flowerclf.core.package_format import ModelPackage, load_package
from flowerclf.core.preprocess import preprocess_eval
from flowerclf.inference.backends import BACKENDS, Backend, create_backend
from flowerclf.inference.inputs import ImageInput, is_single_input, to_rgb

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Prediction:
    """One image's answer; ``to_dict`` is the JSON the CLI and the REST service print."""

    predicted_class: str
    confidence: float
    all_predictions: dict[str, float]
    top_k: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "predicted_class": self.predicted_class,
            "confidence": self.confidence,
            "all_predictions": self.all_predictions,
        }
        if self.top_k is not None:
            out["top_k"] = self.top_k
        return out


@dataclass(frozen=True)
class Neighbor:
    """A training image close to the query in embedding space."""

    id: int
    path: str
    class_name: str
    score: float  # cosine similarity in [-1, 1]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "class": self.class_name, "score": self.score}


@dataclass
class EmbeddingIndex:
    """The package's saved training-image embeddings (L2-normalised rows)."""

    embeddings: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    classes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> EmbeddingIndex:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                embeddings=data["embeddings"].astype(np.float32),
                ids=data["ids"],
                labels=data["labels"],
                paths=data["paths"],
                classes=[str(c) for c in data["classes"]],
            )

    def search(self, queries: np.ndarray, k: int) -> list[list[Neighbor]]:
        k = max(1, min(k, len(self.ids)))
        scores = queries @ self.embeddings.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        results = []
        for row, candidates in zip(scores, top, strict=True):
            ordered = candidates[np.argsort(-row[candidates], kind="stable")]
            results.append([
                Neighbor(int(self.ids[i]), str(self.paths[i]), self.classes[int(self.labels[i])],
                         round(float(row[i]), 6))
                for i in ordered
            ])  # fmt: skip
        return results


class Classifier:
    """A loaded model package on one backend.

    Args:
        package: the loaded package (use :meth:`load`).
        backend: ``onnx`` (default, ONNX Runtime fp32), ``onnx_int8``, ``torch`` or
            ``tensorrt``.
        batch_size: images per forward pass when predicting lists.
        threads: inference threads (default: physical cores).
        max_pixels: decompression-bomb guard for every input.
    """

    def __init__(
        self,
        package: ModelPackage,
        backend: str = "onnx",
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.package = package
        self.classes = package.classes
        self.spec = package.spec
        self.backend_name = backend
        self.batch_size = max(1, batch_size)
        self.max_pixels = max_pixels
        self._backend: Backend = create_backend(package, backend, threads)
        self._index: EmbeddingIndex | None = None
        # Decoding and resizing release the GIL: two threads keep the runtime fed.
        self._decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="flowerclf-decode")

    @classmethod
    def load(
        cls, path: str | Path, backend: str = "onnx", verify: bool = True, **kwargs: Any
    ) -> Classifier:
        """Load the package in directory ``path`` (see ``flowerclf export``).

        ``verify=False`` skips hashing the package's files against their recorded sha256
        (development only; paths and links are checked either way).
        """
        return cls(load_package(path, verify=verify), backend=backend, **kwargs)

    @property
    def info(self) -> dict[str, Any]:
        return self.package.public_info() | {"backend": self.backend_name}

    # --- preprocessing --------------------------------------------------------------------

    def preprocess(self, x: ImageInput) -> np.ndarray:
        """One input -> ``(3, S, S)`` float32, as in evaluation.

        Files and bytes are shrunk while decoding to no less than twice the resize size
        (JPEG DCT scaling, integer reduce), so a 48 MP photo costs a fraction of its full
        decode; the antialiased resize that follows gives the same input up to rounding.
        """
        image = to_rgb(x, max_pixels=self.max_pixels, target_short_side=self.spec.resize_size)
        return preprocess_eval(image, self.spec)

    def _batches(self, items: Sequence[ImageInput]) -> Iterator[np.ndarray]:
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            yield np.stack(list(self._decode_pool.map(self.preprocess, chunk)))

    def run_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed ``(N, 3, S, S)`` -> (probabilities, embeddings)."""
        return self._backend.run(batch)

    def _run(self, items: Sequence[ImageInput]) -> tuple[np.ndarray, np.ndarray]:
        probabilities, embeddings = [], []
        for batch in self._batches(items):
            probs, emb = self._backend.run(batch)
            probabilities.append(probs)
            embeddings.append(emb)
        return np.concatenate(probabilities), np.concatenate(embeddings)

    # --- public API -----------------------------------------------------------------------

    @overload
    def predict(self, x: Sequence[ImageInput], top_k: int | None = None) -> list[Prediction]: ...
    @overload
    def predict(self, x: ImageInput, top_k: int | None = None) -> Prediction: ...

    def predict(self, x: Any, top_k: int | None = None) -> Prediction | list[Prediction]:
        """Classify one image or a list of images (batched).

        Raises:
            ImageDecodeError: an input is not a readable image (for lists, use
                :meth:`predict_each` to get per-item errors instead).
        """
        single = is_single_input(x)
        items = [x] if single else list(x)
        if not items:
            return []
        probabilities, _ = self._run(items)
        predictions = [self.to_prediction(p, top_k) for p in probabilities]
        return predictions[0] if single else predictions

    def predict_each(
        self, items: Sequence[ImageInput], top_k: int | None = None
    ) -> list[Prediction | ImageDecodeError]:
        """Classify a list, one result per item: a bad item gives its error, not an exception.

        Items are decoded in parallel and run in batches of ``batch_size``.
        """
        results: list[Prediction | ImageDecodeError] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            arrays = list(self._decode_pool.map(self._try_preprocess, chunk))
            good = [a for a in arrays if isinstance(a, np.ndarray)]
            probabilities = iter(self._backend.run(np.stack(good))[0] if good else [])
            for array in arrays:
                if isinstance(array, ImageDecodeError):
                    results.append(array)
                else:
                    results.append(self.to_prediction(next(probabilities), top_k))
        return results

    def _try_preprocess(self, x: ImageInput) -> np.ndarray | ImageDecodeError:
        try:
            return self.preprocess(x)
        except ImageDecodeError as exc:
            return exc

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities, ``(C,)`` for one image or ``(N, C)`` for a list."""
        single = is_single_input(x)
        probabilities, _ = self._run([x] if single else list(x))
        return probabilities[0] if single else probabilities

    def embed(self, x: Any) -> np.ndarray:
        """L2-normalised embedding, ``(D,)`` for one image or ``(N, D)`` for a list."""
        single = is_single_input(x)
        _, embeddings = self._run([x] if single else list(x))
        return embeddings[0] if single else embeddings

    def similar(self, x: Any, k: int = 5) -> list[Neighbor] | list[list[Neighbor]]:
        """The ``k`` training images most similar to ``x`` (cosine similarity of embeddings)."""
        single = is_single_input(x)
        embeddings = self.embed([x] if single else list(x))
        results = self.index.search(embeddings, k)
        return results[0] if single else results

    @property
    def index(self) -> EmbeddingIndex:
        if self._index is None:
            self._index = EmbeddingIndex.load(self.package.require("embeddings"))
        return self._index

    def to_prediction(self, probabilities: np.ndarray, top_k: int | None = None) -> Prediction:
        best = int(np.argmax(probabilities))
        all_predictions = {
            c: round(float(p), 6) for c, p in zip(self.classes, probabilities, strict=True)
        }
        top = None
        if top_k:
            order = np.argsort(-probabilities, kind="stable")[: max(1, top_k)]
            top = [{"class": self.classes[i], "probability": round(float(probabilities[i]), 6)}
                   for i in order]  # fmt: skip
        return Prediction(
            self.classes[best], round(float(probabilities[best]), 6), all_predictions, top
        )

    def close(self) -> None:
        self._decode_pool.shutdown(wait=False)

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Classifier({self.package.name!r}, backend={self.backend_name!r}, "
            f"classes={len(self.classes)})"
        )


def rgb_image(x: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Public helper: the RGB image flowerclf would see for ``x``."""
    return to_rgb(x, max_pixels=max_pixels)
