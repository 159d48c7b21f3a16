"""The inference service behind the routes: decode off the loop, infer off the loop.

Uploads are decoded and preprocessed in a small thread pool (Pillow releases the GIL);
forward passes run in a separate single-thread executor, optionally micro-batched, so the
runtime never sees two batches at once and the event loop never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from flowerclf.core.errors import PackageError, UsageError
from flowerclf.core.hardware import physical_cores
from flowerclf.inference.classifier import Classifier, average_views, with_mirrors
from flowerclf.inference.similarity import ITEMS_FILE
from flowerclf.serving.batching import MicroBatcher
from flowerclf.serving.errors import ApiError
from flowerclf.serving.images import decode_upload
from flowerclf.serving.memory import header_pixels, release_free_memory
from flowerclf.serving.settings import ServeSettings


class ClassifierLike(Protocol):
    """What the service needs from :class:`flowerclf.Classifier` (tests pass doubles)."""

    classes: list[str]
    backend_name: str

    @property
    def info(self) -> dict[str, Any]: ...

    def preprocess(self, x: Image.Image) -> np.ndarray: ...

    def run_arrays(self, batch: np.ndarray) -> tuple[Any, ...]:
        """(probabilities, embeddings[, unknown scores or None]) of a batch."""
        ...

    def to_prediction(self, probabilities: np.ndarray, top_k: int | None = None) -> Any: ...

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Any]]: ...

    def load_index(self) -> bool:
        """Load the similarity index now: True if there is one, False if the package has
        none; :class:`PackageError` if it is named but missing or unreadable."""
        ...

    def gallery_dir(self) -> Path | None: ...

    def close(self) -> None: ...


class PackageClassifier:
    """Adapts a loaded :class:`flowerclf.Classifier` to :class:`ClassifierLike`."""

    def __init__(self, classifier: Any) -> None:
        self._clf = classifier
        self.classes: list[str] = list(classifier.classes)
        self.backend_name: str = classifier.backend_name

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._clf.info)

    def preprocess(self, x: Image.Image) -> np.ndarray:
        return np.asarray(self._clf.preprocess(x), dtype=np.float32)

    def run_arrays(self, batch: np.ndarray) -> tuple[Any, ...]:
        return tuple(self._clf.run_arrays(batch, tta=False))  # the service does its own TTA

    def to_prediction(
        self, probabilities: np.ndarray, top_k: int | None = None, unknown_score: Any = None
    ) -> Any:
        return self._clf.to_prediction(probabilities, top_k, unknown_score)

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Any]]:
        return self._clf.index.search(embeddings, k)

    def load_index(self) -> bool:
        path = self._clf.package.file("embeddings")
        if self._clf.similar_index is not None:
            path = self._clf.similar_index / ITEMS_FILE
        if path is None:
            return False
        try:
            index = self._clf.index  # loads and keeps the index (it loaded lazily before)
        except PackageError:
            raise
        except Exception as exc:  # numpy raises many kinds for a damaged .npz
            raise PackageError(
                f"the embedding index {path.name} of the model package is unreadable "
                f"({type(exc).__name__}: {exc}); re-export the package"
            ) from None
        if index.embeddings.ndim != 2 or len(index.embeddings) != len(index.ids):
            raise PackageError(f"the embedding index {path.name} is inconsistent; re-export")
        return True

    def gallery_dir(self) -> Path | None:
        if self._clf.similar_index is not None:  # ids are that collection's, not the gallery's
            return None
        path = self._clf.package.file("gallery")
        return path if path is not None and path.is_dir() else None

    def close(self) -> None:
        self._clf.close()


def threads_per_worker(workers: int) -> int | None:
    """Default inference threads of one worker: the physical cores shared out between the
    workers (each is its own process with its own runtime); None (all cores) for one."""
    return None if workers <= 1 else max(1, physical_cores() // workers)


def load_classifier(settings: ServeSettings) -> ClassifierLike:
    """Load the model package named in ``settings`` (the service's default loader)."""

    if settings.model is None:
        raise UsageError("no model package given (--model DIR or FLOWERCLF_SERVE_MODEL)")
    classifier = Classifier.load(
        settings.model,
        backend=settings.backend,
        verify=settings.verify_package,
        threads=settings.inference_threads or threads_per_worker(settings.workers),
        max_pixels=settings.max_pixels,
        reject=settings.reject,
        reject_threshold=settings.reject_threshold,
        similar_index=settings.similar_index,
    )
    return PackageClassifier(classifier)


class InferenceService:
    """Thread-safe, event-loop-friendly access to one classifier."""

    def __init__(
        self,
        classifier: ClassifierLike,
        settings: ServeSettings,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.classifier = classifier
        self.settings = settings
        self._decode_pool = ThreadPoolExecutor(
            settings.decode_threads, thread_name_prefix="flowerclf-decode"
        )
        # One thread: large images are decoded one at a time, never in the photos' lane.
        self._large_pool = ThreadPoolExecutor(1, thread_name_prefix="flowerclf-decode-large")
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="flowerclf-infer")
        self._on_batch = on_batch
        self._batcher: MicroBatcher | None = None
        if settings.micro_batch:
            self._batcher = MicroBatcher(
                self._run_sync,
                self._infer_pool,
                settings.micro_batch_size,
                settings.micro_batch_wait_ms / 1000.0,
                max_pending=settings.max_active_requests,
            )
        self._gallery = classifier.gallery_dir()
        # Loaded before /ready says yes: a missing or damaged index stops the start with a
        # clear error instead of turning every /v1/similar into a 500 later.
        self.has_index = classifier.load_index()

    @property
    def classes(self) -> list[str]:
        return self.classifier.classes

    @property
    def info(self) -> dict[str, Any]:
        return self.classifier.info

    async def start(self) -> None:
        if self._batcher is not None:
            await self._batcher.start()
        # A first forward pass allocates the runtime's buffers before /ready says yes.
        size = int(self.info.get("preprocess", {}).get("input_size", 0) or 0)
        if size:
            await self._infer(np.zeros((3, size, size), np.float32))

    async def stop(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._large_pool.shutdown(wait=False, cancel_futures=True)
        self._infer_pool.shutdown(wait=True, cancel_futures=True)
        self.classifier.close()

    # --- building blocks -----------------------------------------------------------------

    def _prepare_sync(self, data: bytes, large_lane: bool = False) -> np.ndarray | None:
        """The model input for ``data``; None (outside the large lane) if the header
        announces a large image, which the caller then sends to the large lane."""
        large = header_pixels(data) > self.settings.large_image_pixels
        if large and not large_lane:
            return None
        if not large:
            return self._decode_and_preprocess(data)
        try:
            return self._decode_and_preprocess(data)
        except ApiError as exc:
            # The traceback's frames still hold the decoded pixels: drop them first.
            exc.__traceback__ = exc.__cause__ = exc.__context__ = None
            raise exc from None
        finally:
            release_free_memory()  # the decode's frames are gone: hand their memory back

    def _decode_and_preprocess(self, data: bytes) -> np.ndarray:
        # Shrink while decoding to what preprocessing resizes to anyway (test doubles of the
        # classifier may have no spec: they decode at full size).
        spec = getattr(self.classifier, "spec", None)
        target = getattr(spec, "resize_size", None)
        image = decode_upload(data, self.settings.max_pixels, target)  # preprocess bounds aspect
        try:
            return self.classifier.preprocess(image)
        except ValueError as exc:  # e.g. the image is too small to resize
            raise ApiError(422, "invalid_image", f"image could not be preprocessed: {exc}") from exc

    async def prepare(self, data: bytes) -> np.ndarray:
        loop = asyncio.get_running_loop()
        array = await loop.run_in_executor(self._decode_pool, self._prepare_sync, data)
        if array is None:
            array = await loop.run_in_executor(self._large_pool, self._prepare_sync, data, True)
        assert array is not None  # the large lane always decodes
        return array

    def _run_sync(self, batch: np.ndarray) -> tuple[Any, ...]:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        return self.classifier.run_arrays(batch)

    async def _infer(self, array: np.ndarray, tta: bool = False) -> tuple[Any, ...]:
        """One image's (probabilities, embedding[, unknown score]); ``tta`` averages it with
        its mirror image (both views go through the micro-batcher like any request)."""
        if tta:
            views = await asyncio.gather(
                self._infer(array), self._infer(np.ascontiguousarray(array[..., ::-1]))
            )
            stacked = [None if a is None else np.stack([a, b]) for a, b in zip(*views, strict=True)]
            return tuple(None if o is None else o[0] for o in average_views(stacked, 1))
        if self._batcher is not None:
            return await self._batcher.submit(array)
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self._infer_pool, self._run_sync, array[None])
        return tuple(None if output is None else output[0] for output in outputs)

    async def _infer_batch(self, arrays: Sequence[np.ndarray]) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._infer_pool, self._run_sync, np.stack(arrays))

    # --- operations ----------------------------------------------------------------------

    def _prediction(self, outputs: tuple[Any, ...], top_k: int | None) -> dict[str, Any]:
        """Row outputs -> the prediction dict (with the unknown score when there is one)."""
        if len(outputs) > 2:  # a classifier with unknown-image scoring (issue 13)
            return self.classifier.to_prediction(outputs[0], top_k, outputs[2]).to_dict()  # type: ignore[call-arg]
        return self.classifier.to_prediction(outputs[0], top_k).to_dict()

    async def predict(
        self, data: bytes, top_k: int | None = None, tta: bool = False
    ) -> dict[str, Any]:
        return self._prediction(await self._infer(await self.prepare(data), tta), top_k)

    async def predict_many(
        self, items: Sequence[bytes], top_k: int | None = None, tta: bool = False
    ) -> list[dict[str, Any] | ApiError]:
        """One result per input: a prediction dict, or the :class:`ApiError` for that input."""
        prepared = await asyncio.gather(*(self.prepare(d) for d in items), return_exceptions=True)
        results: list[dict[str, Any] | ApiError] = []
        good: list[int] = []
        arrays: list[np.ndarray] = []
        for index, outcome in enumerate(prepared):
            if isinstance(outcome, ApiError):
                results.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append({})
                good.append(index)
                arrays.append(outcome)
        if arrays:
            if tta:
                batch = await self._infer_batch(list(with_mirrors(np.stack(arrays))))
                outputs = average_views(batch, len(arrays))
            else:
                outputs = await self._infer_batch(arrays)
            for row, index in enumerate(good):
                row_outputs = tuple(None if o is None else o[row] for o in outputs)
                results[index] = self._prediction(row_outputs, top_k)
        return results

    async def embed(self, data: bytes) -> np.ndarray:
        return (await self._infer(await self.prepare(data)))[1]

    async def analyse(
        self, data: bytes, k: int, top_k: int | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Prediction and the ``k`` most similar training images from ONE decode and
        forward pass (no neighbours when the package has no index)."""
        outputs = await self._infer(await self.prepare(data))
        prediction = self._prediction(outputs, top_k)
        neighbours = await self._neighbours(outputs[1], k) if self.has_index else []
        return prediction, neighbours

    async def similar(self, data: bytes, k: int) -> list[dict[str, Any]]:
        if not self.has_index:
            raise ApiError(
                404,
                "not_found",
                "this model package has no embedding index, so /v1/similar is not available",
            )
        return await self._neighbours(await self.embed(data), k)

    async def _neighbours(self, embedding: np.ndarray, k: int) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        neighbors = await loop.run_in_executor(
            self._decode_pool, self.classifier.search, embedding[None].astype(np.float32), k
        )
        out = []
        for neighbor in neighbors[0]:
            item = {"id": int(neighbor.id), "class": neighbor.class_name, "score": neighbor.score}
            if self.gallery_file(int(neighbor.id)) is not None:
                item["thumbnail_url"] = f"/v1/gallery/{int(neighbor.id)}"
            out.append(item)
        return out

    def gallery_file(self, image_id: int) -> Path | None:
        """The thumbnail of training image ``image_id``, if the package has one."""
        if self._gallery is None or image_id < 0:
            return None
        path = self._gallery / f"{image_id}.jpg"
        # A link planted after the package was checked must not be followed.
        return path if path.is_file() and not path.is_symlink() else None
