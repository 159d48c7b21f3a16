"""MLflow pyfunc wrapper: a DataFrame of base64 images -> predictions, one row per image.

Input column ``image``: base64-encoded image file bytes. Output columns:
``predicted_class``, ``confidence`` (calibrated), ``all_predictions`` (class ->
probability), ``is_known`` (False: not like any training class), ``unknown_score`` (higher
= less like them; None without rejection) and ``error`` (empty when the row worked). A
bad row never fails the request: whatever goes wrong with one row (bad base64, not an
image, too large, a decoder bug) becomes that row's ``error``.

Reading files on the serving host (a ``path`` column) is OFF unless the model is loaded
with ``model_config={"path_root": DIR}`` (or ``FLOWERCLF_PYFUNC_PATH_ROOT=DIR`` in the
serving environment): then only regular files inside ``DIR`` of at most ``max_file_bytes``
(default 20 MiB) are read, and every refusal has the same message, so a caller cannot
learn which files exist. ``mlflow models serve`` has no authentication of its own: bind it
to localhost or put it behind a proxy that checks credentials.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from flowerclf.core.errors import FlowerclfError
from flowerclf.inference.classifier import Classifier

log = logging.getLogger(__name__)

PACKAGE_ARTIFACT = "package"
ENV_PATH_ROOT = "FLOWERCLF_PYFUNC_PATH_ROOT"
ENV_MAX_FILE_BYTES = "FLOWERCLF_PYFUNC_MAX_FILE_BYTES"
DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
OUTPUT_COLUMNS = [
    "predicted_class", "confidence", "all_predictions", "is_known", "unknown_score", "error",
]  # fmt: skip
# One message for "missing", "outside the root", "not a regular file", "unreadable": the
# answer must not tell a caller whether some file exists on the serving host.
PATH_REFUSED = "path refused: not a readable image file under the configured path root"
PATHS_DISABLED = (
    "the 'path' column is disabled: send base64 image bytes in 'image' (the model's "
    f"owner can allow one directory with model_config path_root or {ENV_PATH_ROOT})"
)


class RowError(FlowerclfError, ValueError):
    """One input row cannot be used; the message is safe to return to the caller."""


@dataclass(frozen=True)
class PathPolicy:
    """Where a ``path`` row may read from: nowhere (``root`` None) or regular files under
    ``root`` of at most ``max_bytes``."""

    root: Path | None = None
    max_bytes: int = DEFAULT_MAX_FILE_BYTES

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> PathPolicy:
        config = config or {}
        root = config.get("path_root") or os.environ.get(ENV_PATH_ROOT) or None
        max_bytes = config.get("max_file_bytes") or os.environ.get(ENV_MAX_FILE_BYTES)
        return cls(
            root=Path(root).resolve() if root else None,
            max_bytes=int(max_bytes) if max_bytes else DEFAULT_MAX_FILE_BYTES,
        )

    def read(self, path_text: str) -> bytes:
        """The bytes of an allowed file; :class:`RowError` for everything else."""
        if self.root is None:
            raise RowError(PATHS_DISABLED)
        try:
            # resolve() follows links, so a link inside the root cannot lead out of it.
            path = (self.root / path_text).resolve()
        except (OSError, ValueError, RuntimeError):
            raise RowError(PATH_REFUSED) from None
        if not path.is_relative_to(self.root):
            raise RowError(PATH_REFUSED)
        try:
            return _read_capped(path, self.max_bytes)
        except RowError:
            raise
        except (OSError, ValueError):
            raise RowError(PATH_REFUSED) from None


def _read_capped(path: Path, max_bytes: int) -> bytes:
    # O_NONBLOCK: opening a FIFO must not hang the worker; fstat then refuses it, and
    # /dev/zero and friends, because they are not regular files.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RowError(PATH_REFUSED)
        if info.st_size > max_bytes:
            raise RowError(f"file larger than the limit of {max_bytes:,} bytes")
        data = handle.read(max_bytes + 1)  # the size may change between fstat and read
    if len(data) > max_bytes:
        raise RowError(f"file larger than the limit of {max_bytes:,} bytes")
    return data


class FlowerclfPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the model package from the ``package`` artifact (ONNX Runtime backend)."""

    def load_context(self, context):  # type: ignore[no-untyped-def]
        self.classifier = Classifier.load(context.artifacts[PACKAGE_ARTIFACT], backend="onnx")
        self.paths = PathPolicy.from_config(getattr(context, "model_config", None))

    # No type hints here on purpose: MLflow would read them as a (wrong) input schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns and "path" not in frame.columns:
            raise ValueError("input needs an 'image' column (base64 image bytes)")
        rows = [self._predict_row(row) for _, row in frame.iterrows()]
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)

    def _predict_row(self, row: Any) -> dict[str, Any]:
        try:
            prediction = self.classifier.predict(self._row_bytes(row))
            return prediction.to_dict() | {"error": ""}  # the verdict column is dropped
        except FlowerclfError as exc:  # the message was written for the caller
            return self._failed(str(exc))
        except Exception:  # a bug or a decoder failure: logged here, never sent out
            log.exception("pyfunc row failed")
            return self._failed("internal error while predicting this row")

    def _failed(self, message: str) -> dict[str, Any]:
        empty = dict.fromkeys(self.classifier.classes, 0.0)
        return {"predicted_class": "", "confidence": 0.0, "all_predictions": empty,
                "is_known": False, "unknown_score": None, "error": message}  # fmt: skip

    def _row_bytes(self, row: Any) -> bytes:
        image = row.get("image")
        if isinstance(image, str) and image:
            limit = self.paths.max_bytes
            if len(image) > (limit * 4) // 3 + 4:  # checked before decoding anything
                raise RowError(f"'image' larger than the limit of {limit:,} bytes")
            try:
                return base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError):
                raise RowError("the 'image' column must hold base64-encoded image bytes") from None
        path = row.get("path")
        if isinstance(path, str) and path:
            return self.paths.read(path)
        raise RowError("row has neither an 'image' nor a 'path' value")
