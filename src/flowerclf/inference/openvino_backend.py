"""OpenVINO on the CPU: the package's own ``model.onnx`` (``openvino``, fp32; or
``openvino_bf16``, the same graph computed in bfloat16 on CPUs with bf16 units) or an int8
model quantised by NNCF and kept in the package (``openvino_int8``).

OpenVINO is an optional runtime (``pip install 'flowerclf[openvino]'``): on some CPUs it
runs the same fp32 graph faster than ONNX Runtime (its convolution kernels and fusions
differ), which is what ``backend="auto"`` measures. The fp32 backend pins the inference
precision to f32: on CPUs with bf16 or AMX units OpenVINO would otherwise silently run in
bfloat16, which is faster but no longer passes the package's fp32 parity check; that is
``openvino_bf16``, which ``auto`` treats like an int8 model (chosen only within the accuracy
budget the export measured).
"""

from __future__ import annotations

import importlib
import queue
import threading
from typing import Any

import numpy as np

from flowerclf.core.errors import MissingExtraError
from flowerclf.core.hardware import physical_cores
from flowerclf.core.package_format import INPUT_NAME, ModelPackage

# Each OpenVINO backend: the package file it reads (a key of the descriptor's files) and the
# precision it computes in.
OPENVINO_BACKENDS = {
    "openvino": ("onnx", "f32"),
    "openvino_int8": ("openvino_int8", "f32"),  # int8 where the IR says so, f32 elsewhere
    "openvino_bf16": ("onnx", "bf16"),
}
INSTALL_HINT = "pip install 'flowerclf[openvino]'"


def import_openvino() -> Any:
    """The ``openvino`` module, or a :class:`MissingExtraError` that says what to install."""
    try:
        return importlib.import_module("openvino")
    except ImportError as exc:
        raise MissingExtraError(
            f"the OpenVINO backend needs the openvino extra: {INSTALL_HINT} ({exc})"
        ) from None


def openvino_available() -> bool:
    """Whether OpenVINO can be imported here (without raising)."""
    try:
        import_openvino()
    except MissingExtraError:
        return False
    return True


def openvino_version() -> str | None:
    try:
        return str(import_openvino().__version__)
    except MissingExtraError:
        return None


def compile_config(threads: int | None, precision: str = "f32") -> dict[str, Any]:
    """CPU plugin settings: one stream over the physical cores (latency; batches still use
    every core), and an explicit inference precision (see the module docstring)."""
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads or physical_cores(),
        "INFERENCE_PRECISION_HINT": precision,
    }


class OpenVinoBackend:
    """OpenVINO CPU inference on a model package (see the module docstring).

    Thread-safe: each call takes an idle infer request from a small pool (creating one when
    all are busy), so concurrent service requests never share one request's buffers.
    """

    def __init__(self, package: ModelPackage, name: str = "openvino", threads: int | None = None):
        if name not in OPENVINO_BACKENDS:
            raise ValueError(f"not an OpenVINO backend: {name!r}")
        ov = import_openvino()
        self.name = name
        core = ov.Core()
        file_key, precision = OPENVINO_BACKENDS[name]
        model = core.read_model(str(package.require(file_key)))
        self._compiled = core.compile_model(model, "CPU", compile_config(threads, precision))
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._create_lock = threading.Lock()

    def _request(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            with self._create_lock:
                return self._compiled.create_infer_request()

    def _infer(self, batch: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        request = self._request()
        try:
            request.infer({INPUT_NAME: np.ascontiguousarray(batch, np.float32)})
            # Copies: the request's output buffers are reused by its next inference.
            first, second = (request.get_tensor(n).data.copy() for n in names)
        finally:
            self._idle.put(request)
        return first, second

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._infer(batch, ("probabilities", "embeddings"))

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._infer(batch, ("logits", "embeddings"))
