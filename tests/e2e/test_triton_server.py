"""A real Triton Inference Server on an exported package's ``triton/`` repository.

The ``tritonserver`` binary of the nvidia-pytriton wheel runs the package's ensemble (its
Python preprocessing step, the ONNX model, the Python rejection step, dynamic batching);
tritonclient talks to it over HTTP and gRPC, and the answers must be ``Classifier``'s: same
top-1, probabilities and embeddings within 1e-4, same unknown scores and ``is_known``.

Needs the wheel (``pip install --no-deps nvidia-pytriton``) and the stub's environment
(``flowerclf serve-triton --prepare-env``, run by ``make install``); skipped with the reason
without them, failed in CI.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from flowerclf.core.package_format import INPUT_NAME
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
    predictions = classifier.predict(images)
    expected_top1 = [p.predicted_class for p in predictions]
    # The package's rejection, as the Python API applies it (unknown images are mixed in:
    # the training images are known, so the scores near the threshold matter less here).
    expected_scores = np.array([p.unknown_score for p in predictions], dtype=np.float64)
    expected_known = [p.is_known for p in predictions]
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
            np.testing.assert_allclose(
                answer.as_numpy("unknown_score")[:, 0], expected_scores, rtol=1e-3, atol=1e-4,
                err_msg=name,
            )  # fmt: skip
            assert answer.as_numpy("is_known")[:, 0].tolist() == expected_known, name

        # Dynamic batching: on, and it merges concurrent one-image requests into batches.
        http = httpclient.InferenceServerClient(server.http_url, concurrency=32)
        assert "dynamic_batching" in http.get_model_config("flowerclf_onnx")
        # 32 one-image requests to the ONNX step, in flight together (the client's own
        # async calls: it is not thread-safe). They skip the Python preprocessing step, whose
        # pace on a busy CPU would decide whether two ever meet in the queue; the ensemble
        # path is checked above. Up to three bursts to see one forward pass serve several.
        arrays = np.stack([classifier.preprocess(image) for image in images])
        batched = []
        for _ in range(3):
            before = _counts(http)
            with ThreadPoolExecutor(max_workers=32) as pool:
                results = list(pool.map(partial(_infer_onnx, server.http_url, arrays), range(32)))
            for index, probabilities in enumerate(results):
                np.testing.assert_allclose(
                    probabilities, expected[index % len(arrays)], atol=TOLERANCE
                )
            inferences, executions = (
                after - first for after, first in zip(_counts(http), before, strict=True)
            )
            assert inferences == 32
            batched.append(executions < inferences)
            if batched[-1]:
                break
        assert any(batched)  # at least one forward pass served several requests


_START = threading.Barrier(32)


def _infer_onnx(url: str, arrays: np.ndarray, index: int) -> np.ndarray:
    """One image through the ONNX step from its own client and thread; the 32 threads
    release together, so their requests reach the server's queue at the same moment."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    request = httpclient.InferInput(INPUT_NAME, [1, *arrays.shape[1:]], "FP32")
    request.set_data_from_numpy(arrays[index % len(arrays)][None])
    _START.wait(timeout=60)
    return client.infer("flowerclf_onnx", [request]).as_numpy("probabilities")[0]


def _counts(client: object) -> tuple[int, int]:
    """(images inferred, forward passes run) by the ONNX step so far."""
    stats = client.get_inference_statistics("flowerclf_onnx")["model_stats"][0]  # type: ignore[attr-defined]
    return int(stats["inference_count"]), int(stats["execution_count"])
