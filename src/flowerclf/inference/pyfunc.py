"""MLflow pyfunc wrapper: a DataFrame of base64 images (or file paths) -> predictions.

Input columns: ``image`` (base64-encoded file bytes) or ``path`` (a file the server can
read), one row per image. Output columns: ``predicted_class``, ``confidence`` (calibrated),
``all_predictions`` (class -> probability), ``is_known`` (False: not like any training
class), ``unknown_score`` (higher = less like them; None without rejection) and ``error``
(empty when the row worked), so one bad row does not fail the request.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import mlflow.pyfunc

from flowerclf.core.imaging import ImageDecodeError
from flowerclf.inference.classifier import Classifier

PACKAGE_ARTIFACT = "package"
OUTPUT_COLUMNS = [
    "predicted_class", "confidence", "all_predictions", "is_known", "unknown_score", "error",
]  # fmt: skip


class FlowerclfPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the model package from the ``package`` artifact (ONNX Runtime backend)."""

    def load_context(self, context):  # type: ignore[no-untyped-def]

        self.classifier = Classifier.load(context.artifacts[PACKAGE_ARTIFACT], backend="onnx")

    # No type hints here on purpose: MLflow would read them as a (wrong) input schema.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns and "path" not in frame.columns:
            raise ValueError("input needs an 'image' column (base64 bytes) or a 'path' column")
        rows = []
        for _, row in frame.iterrows():
            try:
                source = _row_source(row)
                prediction = self.classifier.predict(source)
                rows.append(prediction.to_dict() | {"error": ""})  # verdict column dropped
            except (ImageDecodeError, ValueError) as exc:
                empty = dict.fromkeys(self.classifier.classes, 0.0)
                rows.append({
                    "predicted_class": "", "confidence": 0.0, "all_predictions": empty,
                    "is_known": False, "unknown_score": None, "error": str(exc),
                })  # fmt: skip
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def _row_source(row: Any) -> bytes | str:
    image = row.get("image")
    if isinstance(image, str) and image:
        try:
            return base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the 'image' column must hold base64-encoded image bytes") from None
    path = row.get("path")
    if isinstance(path, str) and path:
        return path
    raise ValueError("row has neither an 'image' nor a 'path' value")
