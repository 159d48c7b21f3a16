"""A real Triton Inference Server on an exported package's ``triton/`` repository.

The ``tritonserver`` binary of the nvidia-pytriton wheel runs the package's ensemble (its
Python preprocessing step, the ONNX model, dynamic batching); tritonclient talks to it over
HTTP and gRPC, and the answers must be ``Classifier``'s: same top-1, probabilities and
embeddings within 1e-4.

Needs the wheel (``pip install --no-deps nvidia-pytriton``) and the stub's environment
(``flowerclf serve-triton --prepare-env``, run by ``make install``); skipped with the reason
without them, failed in CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from flowerclf.inference.classifier import Classifier
from flowerclf.serving.triton import (
    TritonOptions,
    TritonUnavailableError,
    default_python_env,
    find_triton,
    python_env_ready,
    start_triton,
)
from tests.helpers.packages import TrainedPackage
from tests.helpers.server import free_port

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4


def _require_triton() -> None:
    try:
        install = find_triton()
    except TritonUnavailableError as exc:
        reason = str(exc)
    else:
        env = default_python_env()
        if not install.from_wheel or python_env_ready(env):
            return
        reason = f"no Triton Python environment at {env} (flowerclf serve-triton --prepare-env)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


def _images(package: TrainedPackage, count: int = 6) -> list[Path]:
    per_class = [sorted(folder.glob("*.jpg")) for folder in sorted(package.images.iterdir())]
    return [paths[i] for i in range(count // len(per_class)) for paths in per_class]


def test_triton_answers_like_the_classifier_over_http_and_grpc_with_dynamic_batching(
    model_package: TrainedPackage,
) -> None:
    _require_triton()
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    images = _images(model_package)
    classifier = Classifier.load(model_package.package)
    expected = classifier.predict_proba(images)
    expected_embeddings = classifier.embed(images)
    expected_top1 = [p.predicted_class for p in classifier.predict(images)]
    data = np.array([[path.read_bytes()] for path in images], dtype=np.object_)

    options = TritonOptions(
        model=model_package.package, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(),
    )  # fmt: skip
    with start_triton(options) as server:
        answers = {}
        for name, client_module, url in (
            ("http", httpclient, server.http_url),
            ("grpc", grpcclient, server.grpc_url),
        ):
            client = client_module.InferenceServerClient(url)
            request = client_module.InferInput("image_bytes", list(data.shape), "BYTES")
            request.set_data_from_numpy(data)
            answers[name] = client.infer("flowerclf", [request])

        for name, answer in answers.items():
            probabilities = answer.as_numpy("probabilities")
            np.testing.assert_allclose(probabilities, expected, atol=TOLERANCE, err_msg=name)
            np.testing.assert_allclose(
                answer.as_numpy("embeddings"), expected_embeddings, atol=TOLERANCE, err_msg=name
            )
            top1 = [classifier.classes[i] for i in probabilities.argmax(axis=1)]
            assert top1 == expected_top1, name

        # Dynamic batching: on, and it merges concurrent one-image requests into batches.
        http = httpclient.InferenceServerClient(server.http_url, concurrency=8)
        assert "dynamic_batching" in http.get_model_config("flowerclf_onnx")
        before = _counts(http)

        # 32 one-image requests in flight together (the client's own async calls: it is
        # not thread-safe).
        pending = []
        for index in range(32):
            request = httpclient.InferInput("image_bytes", [1, 1], "BYTES")
            request.set_data_from_numpy(data[index % len(data)][None])
            pending.append(http.async_infer("flowerclf", [request]))
        singles = [p.get_result().as_numpy("probabilities")[0] for p in pending]
        np.testing.assert_allclose(
            np.stack(singles), expected[np.arange(32) % len(data)], atol=TOLERANCE
        )
        inferences, executions = (
            after - first for after, first in zip(_counts(http), before, strict=True)
        )
        assert inferences == 32
        assert executions < inferences  # at least one forward pass served several requests


def _counts(client: object) -> tuple[int, int]:
    """(images inferred, forward passes run) by the ONNX step so far."""
    stats = client.get_inference_statistics("flowerclf_onnx")["model_stats"][0]  # type: ignore[attr-defined]
    return int(stats["inference_count"]), int(stats["execution_count"])
