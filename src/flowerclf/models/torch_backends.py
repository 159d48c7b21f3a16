"""Backends that keep their tensors in PyTorch: eager PyTorch on the package's safetensors
weights, and a TensorRT engine whose GPU buffers torch holds.

:func:`flowerclf.inference.backends.create_backend` loads this module by name, so the
runtime install (ONNX Runtime, no torch) never imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from flowerclf.config.saved import load_model_section
from flowerclf.core.package_format import INPUT_NAME, ModelPackage, PackageError
from flowerclf.models.net import build_net


class TorchBackend:
    """Eager PyTorch on the safetensors weights (GPU when available)."""

    def __init__(
        self, package: ModelPackage, device: str | None = None, threads: int | None = None
    ):
        self.name = "torch"
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = load_model_section(package.descriptor["model"])
        net, _ = build_net(model, len(package.classes), pretrained=False)
        net.load_state_dict(load_file(str(package.require("weights"))))
        self.net = net.to(self.device).eval()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            images = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            logits, embeddings = self.net(images)
            probabilities = logits.float().softmax(dim=1)
        return probabilities.cpu().numpy(), embeddings.float().cpu().numpy()

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            images = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            logits, embeddings = self.net(images)
        return logits.float().cpu().numpy(), embeddings.float().cpu().numpy()


def tensorrt_available() -> tuple[bool, str]:
    """Whether a TensorRT engine can be built and run here, and if not, why."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the tensorrt Python package is not installed (pip install tensorrt)"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible (TensorRT needs an NVIDIA GPU)"
    return True, "available"


class TensorRTBackend:
    """A serialized TensorRT engine (``model.plan``), buffers held by torch on the GPU."""

    def __init__(self, package: ModelPackage, threads: int | None = None) -> None:
        ok, why = tensorrt_available()
        if not ok:
            raise PackageError(f"TensorRT backend unavailable: {why}")
        import tensorrt as trt  # optional: only on machines with an NVIDIA GPU

        self.name = "tensorrt"
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine_bytes = Path(package.require("tensorrt")).read_bytes()
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._execute(batch)
        return outputs["probabilities"].cpu().numpy(), outputs["embeddings"].cpu().numpy()

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._execute(batch)
        return outputs["logits"].cpu().numpy(), outputs["embeddings"].cpu().numpy()

    def _execute(self, batch: np.ndarray) -> dict[str, torch.Tensor]:
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
            raise PackageError("TensorRT execution failed")
        stream.synchronize()
        return outputs
