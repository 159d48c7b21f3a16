"""``Classifier``: load a model package, predict, embed, find similar training images.

>>> from flowerclf import Classifier
>>> clf = Classifier.load("models/tf_flowers")            # the fastest runtime here
>>> clf.backend_name                                        # e.g. 'openvino'
>>> clf.predict("rose.jpg").to_dict()
{'predicted_class': 'roses', 'confidence': 0.97, 'all_predictions': {...},
 'is_known': True, 'unknown_score': 0.21}

``confidence`` and ``all_predictions`` are calibrated probabilities (temperature fitted at
export); ``is_known`` is False for images unlike every training class (see
:mod:`flowerclf.core.open_set`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, overload

import numpy as np
from PIL import Image

from flowerclf.core.errors import UsageError
from flowerclf.core.hardware import decode_threads, single_threaded_blas
from flowerclf.core.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError
from flowerclf.core.open_set import (
    OPEN_WORLD_KEY,
    UNKNOWN_MESSAGE,
    OpenWorld,
    load_open_world,
    softmax,
)
from flowerclf.core.package_format import ModelPackage, load_package
from flowerclf.core.preprocess import preprocess_eval
from flowerclf.inference.auto import AutoBackend, AutoChoice
from flowerclf.inference.backends import BACKENDS, DEFAULT_BACKEND, Backend, create_backend
from flowerclf.inference.inputs import ImageInput, is_single_input, to_rgb
from flowerclf.inference.similarity import (
    ITEMS_FILE,
    AnnIndex,
    attach_ann,
    check_index_model,
    exact_search,
    index_meta,
)

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Prediction:
    """One image's answer; ``to_dict`` is the JSON the CLI and the REST service print."""

    predicted_class: str
    confidence: float
    all_predictions: dict[str, float]
    top_k: list[dict[str, Any]] | None = None
    # Open world (issue 13): False when the image is unlike every training class;
    # ``unknown_score`` is None when the package has no rejection (exported before it).
    is_known: bool = True
    unknown_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "predicted_class": self.predicted_class,
            "confidence": self.confidence,
            "all_predictions": self.all_predictions,
            "is_known": self.is_known,
            "unknown_score": self.unknown_score,
        }
        if not self.is_known:
            out["verdict"] = UNKNOWN_MESSAGE
        if self.top_k is not None:
            out["top_k"] = self.top_k
        return out


class ModelOutputs(NamedTuple):
    """One batch through the model: calibrated probabilities ``(N, C)``, embeddings
    ``(N, D)``, and unknown scores ``(N,)`` (None when the package has no rejection)."""

    probabilities: np.ndarray
    embeddings: np.ndarray
    unknown_scores: np.ndarray | None


def with_mirrors(batch: np.ndarray) -> np.ndarray:
    """``(N, 3, S, S)`` -> ``(2N, 3, S, S)``: the batch, then each image mirrored left-right
    (one runtime call for both views: cheaper than two at small batches)."""
    return np.concatenate([batch, np.ascontiguousarray(batch[..., ::-1])])


def average_views(outputs: Sequence[np.ndarray | None], count: int) -> tuple[Any, ...]:
    """Outputs of :func:`with_mirrors` rows (``2 * count``) -> one row per image.

    Test-time augmentation averages the two views' calibrated probabilities and unknown
    scores, and their embeddings (re-normalised to unit length, as every embedding is).
    """
    merged: list[np.ndarray | None] = []
    for position, output in enumerate(outputs):
        if output is None:
            merged.append(None)
            continue
        mean = (output[:count] + output[count:]) / 2
        if position == 1:  # embeddings
            mean = mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)
        merged.append(mean.astype(output.dtype, copy=False))
    return tuple(merged)


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
    """The gallery's embeddings (L2-normalised rows): the package's training images, or a
    collection indexed by ``flowerclf index build``. Searched exactly, or through ``ann``
    (a FAISS index, :mod:`flowerclf.inference.similarity`) for large galleries."""

    embeddings: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    classes: list[str] = field(default_factory=list)
    ann: AnnIndex | None = None

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
        if self.ann is not None:
            scores, rows = self.ann.search(queries, k)
        else:
            scores, rows = exact_search(self.embeddings, queries, k)
        return [
            [Neighbor(int(self.ids[i]), str(self.paths[i]), self.classes[int(self.labels[i])],
                      round(float(score), 6))
             for i, score in zip(found, row_scores, strict=True) if i >= 0]
            for found, row_scores in zip(rows, scores, strict=True)
        ]  # fmt: skip


class Classifier:
    """A loaded model package on one backend.

    Args:
        package: the loaded package (use :meth:`load`).
        backend: ``auto`` (default: the fastest runtime on this machine that passes the
            package's checks, measured once and cached, see :mod:`flowerclf.inference.auto`),
            ``onnx`` (ONNX Runtime fp32), ``onnx_int8``, ``openvino`` (fp32),
            ``openvino_int8``, ``torch`` or ``tensorrt``. :attr:`backend_name` says which
            runtime runs.
        batch_size: images per forward pass when predicting lists.
        threads: inference threads (default: physical cores).
        max_pixels: decompression-bomb guard for every input.
        reject: False turns unknown-image rejection off (every image ``is_known``; the
            ``unknown_score`` is still reported).
        reject_threshold: replaces the package's rejection threshold.
        reject_method: score with another fitted method (``msp``, ``energy``, ``knn``,
            ``mahalanobis``) instead of the package's default.
        tta: test-time augmentation by default: every image is also run mirrored and the
            two views averaged (about twice the compute; see ``flowerclf evaluate
            --tta`` for what it buys). Each call can override it with ``tta=``.
        similar_index: a directory written by ``flowerclf index build``: :meth:`similar`
            searches that collection instead of the package's training images.
    """

    def __init__(
        self,
        package: ModelPackage,
        backend: str = DEFAULT_BACKEND,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        reject: bool = True,
        reject_threshold: float | None = None,
        reject_method: str | None = None,
        tta: bool = False,
        similar_index: str | Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.package = package
        self.classes = package.classes
        self.spec = package.spec
        self.batch_size = max(1, batch_size)
        self.max_pixels = max_pixels
        self.tta = tta
        self._backend: Backend = create_backend(package, backend, threads)
        self.requested_backend = backend
        # The runtime that runs (for auto: what it picked, e.g. "openvino").
        self.backend_name: str = self._backend.name
        self.open_world: OpenWorld = load_open_world(
            package.descriptor, package.root, reject=reject, threshold=reject_threshold,
            method=reject_method,
        )  # fmt: skip
        section = package.descriptor.get(OPEN_WORLD_KEY) or {}
        self._tta_temperature = float(section.get("tta_temperature") or self.open_world.temperature)
        self._index: EmbeddingIndex | None = None
        self.similar_index = Path(similar_index) if similar_index is not None else None
        # Decoding and resizing release the GIL: one thread per CPU keeps the runtime fed.
        self._decode_pool = ThreadPoolExecutor(
            max_workers=decode_threads(), thread_name_prefix="flowerclf-decode"
        )

    @property
    def auto_choice(self) -> AutoChoice | None:
        """What ``backend="auto"`` picked and measured (None for a named backend)."""
        return self._backend.choice if isinstance(self._backend, AutoBackend) else None

    @classmethod
    def load(
        cls, path: str | Path, backend: str = DEFAULT_BACKEND, verify: bool = True, **kwargs: Any
    ) -> Classifier:
        """Load the package in directory ``path`` (see ``flowerclf export``).

        ``verify=False`` skips hashing the package's files against their recorded sha256
        (development only; paths and links are checked either way).
        """
        return cls(load_package(path, verify=verify), backend=backend, **kwargs)

    @property
    def info(self) -> dict[str, Any]:
        return self.package.public_info() | {
            "backend": self.backend_name,
            "open_world": self.open_world.describe() | {"tta_temperature": self._tta_temperature},
        }

    # --- preprocessing --------------------------------------------------------------------

    def preprocess(self, x: ImageInput) -> np.ndarray:
        """One input -> ``(3, S, S)`` float32, as in evaluation.

        Files and bytes are shrunk while decoding to no less than twice the resize size
        (JPEG DCT scaling, integer reduce), so a 48 MP photo costs a fraction of its full
        decode; the antialiased resize that follows gives the same input up to rounding.
        """
        image = to_rgb(x, max_pixels=self.max_pixels, target_short_side=self.spec.resize_size)
        return preprocess_eval(image, self.spec)

    def preprocess_batches(
        self, items: Sequence[ImageInput]
    ) -> Iterator[list[np.ndarray | ImageDecodeError]]:
        """``items`` preprocessed in the decode pool, ``batch_size`` at a time, in order; an
        unreadable item gives its :class:`ImageDecodeError` in its place.

        The next batch is already decoding while the caller runs the model on this one, so
        decoding and inference overlap; at most two batches are held at once. For commands
        that score folders of images (``predict``, ``score``).
        """
        pending: deque[list[Future[np.ndarray | ImageDecodeError]]] = deque()
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            pending.append([self._decode_pool.submit(self._try_preprocess, x) for x in chunk])
            if len(pending) > 1:
                yield [future.result() for future in pending.popleft()]
        while pending:
            yield [future.result() for future in pending.popleft()]

    def _batches(self, items: Sequence[ImageInput]) -> Iterator[np.ndarray]:
        for arrays in self.preprocess_batches(items):
            for array in arrays:
                if isinstance(array, ImageDecodeError):
                    raise array
            yield np.stack(arrays)  # type: ignore[arg-type]

    def run_arrays(self, batch: np.ndarray, tta: bool | None = None) -> ModelOutputs:
        """Preprocessed ``(N, 3, S, S)`` -> calibrated probabilities, embeddings, unknown
        scores (the one place every runtime's outputs are computed); ``tta`` (default: the
        classifier's setting) averages each image with its mirror image."""
        tta = self.tta if tta is None else tta
        logits, embeddings = self._backend.run_logits(with_mirrors(batch) if tta else batch)
        # One BLAS thread for the scores' small products: idle OpenBLAS threads spin and
        # would slow the next batch's model run (see SingleThreadedBlas).
        with single_threaded_blas:
            outputs = self._outputs(logits, embeddings, tta)
        return ModelOutputs(*average_views(outputs, len(batch))) if tta else outputs

    def _outputs(self, logits: np.ndarray, embeddings: np.ndarray, tta: bool) -> ModelOutputs:
        return ModelOutputs(
            # Test-time augmentation has its own temperature (fitted at export for the
            # averaged views; older packages: the single-view one).
            softmax(logits, self._tta_temperature) if tta
            else self.open_world.probabilities(logits),
            embeddings,
            self.open_world.scores(logits, embeddings),
        )  # fmt: skip

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed ``(N, 3, S, S)`` -> raw (uncalibrated) logits and embeddings."""
        return self._backend.run_logits(batch)

    def _run(self, items: Sequence[ImageInput], tta: bool | None = None) -> ModelOutputs:
        outputs = [self.run_arrays(batch, tta) for batch in self._batches(items)]
        scores = [o.unknown_scores for o in outputs]
        return ModelOutputs(
            np.concatenate([o.probabilities for o in outputs]),
            np.concatenate([o.embeddings for o in outputs]),
            None if any(s is None for s in scores) else np.concatenate(scores),  # type: ignore[arg-type]
        )

    # --- public API -----------------------------------------------------------------------

    @overload
    def predict(
        self, x: Sequence[ImageInput], top_k: int | None = None, tta: bool | None = None
    ) -> list[Prediction]: ...
    @overload
    def predict(
        self, x: ImageInput, top_k: int | None = None, tta: bool | None = None
    ) -> Prediction: ...

    def predict(
        self, x: Any, top_k: int | None = None, tta: bool | None = None
    ) -> Prediction | list[Prediction]:
        """Classify one image or a list of images (batched); ``tta=True`` averages each
        image with its mirror image (default: the classifier's ``tta`` setting).

        Raises:
            ImageDecodeError: an input is not a readable image (for lists, use
                :meth:`predict_each` to get per-item errors instead).
        """
        single = is_single_input(x)
        items = [x] if single else list(x)
        if not items:
            return []
        outputs = self._run(items, tta)
        predictions = [
            self.to_prediction(p, top_k, _score(outputs.unknown_scores, i))
            for i, p in enumerate(outputs.probabilities)
        ]
        return predictions[0] if single else predictions

    def predict_each(
        self, items: Sequence[ImageInput], top_k: int | None = None, tta: bool | None = None
    ) -> list[Prediction | ImageDecodeError]:
        """Classify a list, one result per item: a bad item gives its error, not an exception.

        Items are decoded in parallel (the next batch while the model runs this one) and run
        in batches of ``batch_size``.
        """
        results: list[Prediction | ImageDecodeError] = []
        for arrays in self.preprocess_batches(items):
            good = [a for a in arrays if isinstance(a, np.ndarray)]
            outputs = self.run_arrays(np.stack(good), tta) if good else None
            row = 0
            for array in arrays:
                if isinstance(array, ImageDecodeError) or outputs is None:
                    results.append(array)  # type: ignore[arg-type]
                else:
                    score = _score(outputs.unknown_scores, row)
                    results.append(self.to_prediction(outputs.probabilities[row], top_k, score))
                    row += 1
        return results

    def _try_preprocess(self, x: ImageInput) -> np.ndarray | ImageDecodeError:
        try:
            return self.preprocess(x)
        except ImageDecodeError as exc:
            return exc

    def predict_proba(self, x: Any, tta: bool | None = None) -> np.ndarray:
        """Calibrated class probabilities, ``(C,)`` for one image or ``(N, C)`` for a list."""
        single = is_single_input(x)
        probabilities = self._run([x] if single else list(x), tta).probabilities
        return probabilities[0] if single else probabilities

    def embed(self, x: Any, tta: bool | None = None) -> np.ndarray:
        """L2-normalised embedding, ``(D,)`` for one image or ``(N, D)`` for a list."""
        single = is_single_input(x)
        embeddings = self._run([x] if single else list(x), tta).embeddings
        return embeddings[0] if single else embeddings

    def similar(self, x: Any, k: int = 5) -> list[Neighbor] | list[list[Neighbor]]:
        """The ``k`` training images most similar to ``x`` (cosine similarity of embeddings)."""
        single = is_single_input(x)
        embeddings = self.embed([x] if single else list(x))
        results = self.index.search(embeddings, k)
        return results[0] if single else results

    @property
    def index(self) -> EmbeddingIndex:
        """The gallery :meth:`similar` searches (loaded on first use); approximate (FAISS)
        from :data:`~flowerclf.inference.similarity.ANN_THRESHOLD` rows, else exact."""
        if self._index is None:
            if self.similar_index is not None:
                check_index_model(index_meta(self.similar_index), self.package)
                index = EmbeddingIndex.load(self.similar_index / ITEMS_FILE)
            else:
                index = EmbeddingIndex.load(self.package.require("embeddings"))
            attach_ann(index, self.similar_index)
            self._index = index
        return self._index

    def to_prediction(
        self,
        probabilities: np.ndarray,
        top_k: int | None = None,
        unknown_score: float | None = None,
    ) -> Prediction:
        """One row of calibrated probabilities (and its unknown score) -> a Prediction."""
        best = int(np.argmax(probabilities))
        all_predictions = {
            c: round(float(p), 6) for c, p in zip(self.classes, probabilities, strict=True)
        }
        top = None
        if top_k:
            order = np.argsort(-probabilities, kind="stable")[: max(1, top_k)]
            top = [{"class": self.classes[i], "probability": round(float(probabilities[i]), 6)}
                   for i in order]  # fmt: skip
        score = None if unknown_score is None else round(float(unknown_score), 6)
        return Prediction(
            self.classes[best], round(float(probabilities[best]), 6), all_predictions, top,
            is_known=self.open_world.is_known(unknown_score), unknown_score=score,
        )  # fmt: skip

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


def _score(scores: np.ndarray | None, row: int) -> float | None:
    return None if scores is None else float(scores[row])


def rgb_image(x: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Public helper: the RGB image flowerclf would see for ``x``."""
    return to_rgb(x, max_pixels=max_pixels)
