"""Runtimes that map a preprocessed batch ``(N, 3, S, S)`` float32 to probabilities and
embeddings: ONNX Runtime (fp32 or int8), eager PyTorch, TensorRT.

Each backend is built from a :class:`ModelPackage` alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from flowerclf.inference.package import INPUT_NAME, ModelPackage, PackageError

BACKENDS = ("onnx", "onnx_int8", "torch", "tensorrt")


class Backend(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, 3, S, S)`` float32 -> (probabilities ``(N, C)``, embeddings ``(N, D)``)."""
        ...


def physical_cores() -> int:
    """Cores to give one inference session: hyper-threads slow convolutions down."""
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return max(1, os.cpu_count() or 1)


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


class TorchBackend:
    """Eager PyTorch on the safetensors weights (GPU when available)."""

    def __init__(
        self, package: ModelPackage, device: str | None = None, threads: int | None = None
    ):
        import torch
        from safetensors.torch import load_file

        from flowerclf.models.net import build_net

        self.name = "torch"
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model_cfg = package.descriptor["model"]
        net, _ = build_net(model_cfg, len(package.classes), pretrained=False)
        net.load_state_dict(load_file(str(package.require("weights"))))
        self.net = net.to(self.device).eval()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            images = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            logits, embeddings = self.net(images)
            probabilities = logits.float().softmax(dim=1)
        return probabilities.cpu().numpy(), embeddings.float().cpu().numpy()


def tensorrt_available() -> tuple[bool, str]:
    """Whether a TensorRT engine can be built and run here, and if not, why."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the tensorrt Python package is not installed (pip install tensorrt)"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible (TensorRT needs an NVIDIA GPU)"
    except ImportError:
        return False, "PyTorch is not installed (used to hold TensorRT's GPU buffers)"
    return True, "available"


class TensorRTBackend:
    """A serialized TensorRT engine (``model.plan``), buffers held by torch on the GPU."""

    def __init__(self, package: ModelPackage) -> None:
        ok, why = tensorrt_available()
        if not ok:
            raise PackageError(f"TensorRT backend unavailable: {why}")
        import tensorrt as trt
        import torch

        self.name = "tensorrt"
        self._torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine_bytes = Path(package.require("tensorrt")).read_bytes()
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        images = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).cuda()
        self.context.set_input_shape(INPUT_NAME, tuple(images.shape))
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        outputs = {}
        for name in ("probabilities", "logits", "embeddings"):
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return outputs["probabilities"].cpu().numpy(), outputs["embeddings"].cpu().numpy()


def create_backend(package: ModelPackage, name: str, threads: int | None = None) -> Backend:
    if name in ("onnx", "onnx_int8"):
        return OnnxBackend(package, name, threads)
    if name == "torch":
        return TorchBackend(package, threads=threads)
    if name == "tensorrt":
        return TensorRTBackend(package)
    raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
