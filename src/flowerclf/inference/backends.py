"""Runtimes that map a preprocessed batch ``(N, 3, S, S)`` float32 to probabilities and
embeddings: ONNX Runtime (fp32 or int8) here; OpenVINO (fp32 or int8) in
:mod:`flowerclf.inference.openvino_backend` (an optional extra); eager PyTorch and TensorRT
in :mod:`flowerclf.models.torch_backends`, loaded only when asked for; and ``auto``
(:mod:`flowerclf.inference.auto`), the fastest of these that passes the package's checks
on this machine.

Each backend is built from a :class:`ModelPackage` alone.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from flowerclf.core.errors import UsageError
from flowerclf.core.hardware import physical_cores
from flowerclf.core.package_format import INPUT_NAME, ModelPackage, PackageError
from flowerclf.inference.auto import AutoBackend
from flowerclf.inference.openvino_backend import OpenVinoBackend

BACKENDS = (
    "auto", "onnx", "onnx_int8", "openvino", "openvino_int8", "openvino_bf16", "torch",
    "tensorrt",
)  # fmt: skip
DEFAULT_BACKEND = "auto"
OPENVINO_NAMES = ("openvino", "openvino_int8", "openvino_bf16")
# Backends that hold their tensors in PyTorch live with the torch code, which the runtime
# install does not have; they are looked up by name when asked for.
TORCH_BACKENDS = {"torch": "TorchBackend", "tensorrt": "TensorRTBackend"}
TORCH_BACKENDS_MODULE = "flowerclf.models.torch_backends"


class Backend(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3, S, S)`` float32 -> (probabilities ``(N, C)``, embeddings ``(N, D)``)."""
        ...

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3, S, S)`` float32 -> (raw logits ``(N, C)``, embeddings ``(N, D)``): what
        calibration and unknown-image scoring (:mod:`flowerclf.core.open_set`) start from."""
        ...


def onnx_session_options(threads: int | None = None) -> Any:
    """Session options for low-latency CPU inference.

    One intra-op pool sized to the physical cores, sequential execution (these CNNs are
    chains, parallel branches buy nothing), full graph optimisation (conv+BN+activation
    fusion), and spinning threads kept on so back-to-back batches do not pay a wake-up.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return options


class OnnxBackend:
    """ONNX Runtime on the package's fp32 (``onnx``) or int8 (``onnx_int8``) model."""

    def __init__(self, package: ModelPackage, name: str = "onnx", threads: int | None = None):
        import onnxruntime as ort

        self.name = name
        path = package.require("onnx_int8" if name == "onnx_int8" else "onnx")
        providers = ["CPUExecutionProvider"]
        if name == "onnx" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(
            str(path), onnx_session_options(threads), providers=providers
        )

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, embeddings = self.session.run(
            ["probabilities", "embeddings"], {INPUT_NAME: np.ascontiguousarray(batch, np.float32)}
        )
        return probabilities, embeddings

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = self.session.run(
            ["logits", "embeddings"], {INPUT_NAME: np.ascontiguousarray(batch, np.float32)}
        )
        return logits, embeddings


def _torch_backend(package: ModelPackage, name: str, threads: int | None) -> Backend:
    try:
        module = importlib.import_module(TORCH_BACKENDS_MODULE)
    except ImportError as exc:
        raise PackageError(
            f"backend {name!r} needs PyTorch and timm (pip install 'flowerclf[train]'): {exc}"
        ) from None
    backend: Backend = getattr(module, TORCH_BACKENDS[name])(package, threads=threads)
    return backend


def create_backend(package: ModelPackage, name: str, threads: int | None = None) -> Backend:
    """The backend ``name`` (one of :data:`BACKENDS`) on ``package``.

    Raises:
        UsageError: an unknown name.
        PackageError: the package lacks the file the backend reads, or torch is missing.
        MissingExtraError: OpenVINO is not installed (``pip install 'flowerclf[openvino]'``).
    """
    if name == "auto":
        return AutoBackend(package, create_fixed_backend, threads)
    return create_fixed_backend(package, name, threads)


def create_fixed_backend(package: ModelPackage, name: str, threads: int | None = None) -> Backend:
    """One named runtime (every name of :data:`BACKENDS` but ``auto``)."""
    if name in ("onnx", "onnx_int8"):
        return OnnxBackend(package, name, threads)
    if name in OPENVINO_NAMES:
        return OpenVinoBackend(package, name, threads)
    if name in TORCH_BACKENDS:
        return _torch_backend(package, name, threads)
    raise UsageError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
