"""The package as an MLflow pyfunc model: saved in the package, logged to the run, registered."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import flowerclf
from flowerclf.core.open_set import OPEN_SET_FILE, OPEN_SET_FILE_KEY
from flowerclf.core.package_format import (
    DESCRIPTOR_FILE,
    EMBEDDINGS_FILE,
    ONNX_FILE,
    SHA256_TREE_KEY,
    ModelPackage,
)
from flowerclf.inference.pyfunc import PACKAGE_ARTIFACT, FlowerclfPyfunc

log = logging.getLogger(__name__)

LOGGED_MODEL_NAME = "pyfunc_model"


def _signature(classes: list[str]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, Map, Schema

    inputs = Schema([
        ColSpec(DataType.string, "image", required=False),
        ColSpec(DataType.string, "path", required=False),
    ])  # fmt: skip
    outputs = Schema([
        ColSpec(DataType.string, "predicted_class"),
        ColSpec(DataType.double, "confidence"),
        ColSpec(Map(DataType.double), "all_predictions"),
        ColSpec(DataType.boolean, "is_known"),
        ColSpec(DataType.double, "unknown_score", required=False),
        ColSpec(DataType.string, "error"),
    ])  # fmt: skip
    return ModelSignature(inputs=inputs, outputs=outputs)


@contextmanager
def _slim_package(package: ModelPackage) -> Iterator[Path]:
    """Descriptor + fp32 ONNX + embeddings: what the pyfunc needs, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        slim = Path(tmp) / "package"
        slim.mkdir()
        descriptor = json.loads(json.dumps(package.descriptor))
        descriptor["files"] = {"onnx": ONNX_FILE, "embeddings": EMBEDDINGS_FILE}
        descriptor.pop(SHA256_TREE_KEY, None)  # the directories stay in the full package
        shutil.copyfile(package.require("onnx"), slim / ONNX_FILE)
        shutil.copyfile(package.require("embeddings"), slim / EMBEDDINGS_FILE)
        open_set = package.file(OPEN_SET_FILE_KEY)  # unknown-image rejection (issue 13)
        if open_set is not None and open_set.is_file():
            shutil.copyfile(open_set, slim / OPEN_SET_FILE)
            descriptor["files"][OPEN_SET_FILE_KEY] = OPEN_SET_FILE
        (slim / DESCRIPTOR_FILE).write_text(json.dumps(descriptor, indent=2) + "\n")
        yield slim


def _model_kwargs(package: ModelPackage, slim: Path, example_image: bytes) -> dict[str, Any]:
    import onnxruntime
    import pandas as pd
    import threadpoolctl
    from PIL import Image

    example = pd.DataFrame({"image": [base64.b64encode(example_image).decode("ascii")]})
    return {
        "python_model": FlowerclfPyfunc(),
        "artifacts": {PACKAGE_ARTIFACT: str(slim)},
        "signature": _signature(package.classes),
        "input_example": example,
        # The inference code travels with the model, so it loads where flowerclf is not
        # installed; it needs only these (no torch).
        "code_paths": [str(Path(flowerclf.__file__).parent)],
        "pip_requirements": [
            f"onnxruntime=={onnxruntime.__version__}",
            f"pillow=={Image.__version__}",
            f"pandas=={pd.__version__}",
            f"threadpoolctl=={threadpoolctl.__version__}",
            "numpy",
        ],
        "metadata": {"classes": package.classes, "preprocess": package.descriptor["preprocess"]},
    }


def save_pyfunc(package: ModelPackage, out_dir: Path, example_image: bytes) -> Path:
    """Save the pyfunc model into ``out_dir`` (``mlflow models serve -m out_dir``)."""
    import mlflow.pyfunc

    with _slim_package(package) as slim:
        mlflow.pyfunc.save_model(path=str(out_dir), **_model_kwargs(package, slim, example_image))
    return out_dir


def log_pyfunc(
    package: ModelPackage,
    run_id: str,
    tracking_uri: str,
    registered_name: str | None,
    example_image: bytes,
) -> dict[str, str]:
    """Log the pyfunc to training run ``run_id`` and register it; returns the model URIs."""
    import mlflow
    import mlflow.pyfunc

    mlflow.set_tracking_uri(tracking_uri)
    with _slim_package(package) as slim, mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=LOGGED_MODEL_NAME,
            registered_model_name=registered_name,
            **_model_kwargs(package, slim, example_image),
        )
    uris = {"run_model_uri": f"runs:/{run_id}/{LOGGED_MODEL_NAME}", "model_uri": info.model_uri}
    if registered_name and info.registered_model_version is not None:
        uris["registered_model_uri"] = f"models:/{registered_name}/{info.registered_model_version}"
    return uris
