"""Run a torch module through ONNX Runtime, usually faster than eager PyTorch on CPU.

Used for the frozen trunk of the CPU fast path and for batch evaluation; the exported,
checked model package of ``flowerclf export`` builds on the same export call.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import onnxruntime as ort
import torch
from torch import nn

from flowerclf.core.errors import ConfigError
from flowerclf.inference.backends import onnx_session_options

Runner = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


def export_onnx(
    module: nn.Module,
    path: Path,
    input_size: int,
    output_names: Sequence[str],
    opset: int = 17,
) -> Path:
    """Export ``module`` (eval mode) with a dynamic batch axis and named outputs."""
    module.eval()
    example = torch.zeros(1, 3, input_size, input_size)
    dynamic = {"images": {0: "batch"}} | {name: {0: "batch"} for name in output_names}
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["images"],
        output_names=list(output_names),
        dynamic_axes=dynamic,
        opset_version=opset,
        dynamo=False,  # the TorchScript exporter handles every timm model we ship
    )
    return path


def onnx_runner(
    module: nn.Module, input_size: int, output_names: Sequence[str], threads: int | None = None
) -> Runner:
    """Export ``module`` to a temporary ONNX file and return ``images -> outputs``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(module, Path(tmp) / "model.onnx", input_size, output_names)
        session = ort.InferenceSession(
            str(path), onnx_session_options(threads), providers=["CPUExecutionProvider"]
        )

    def run(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = session.run(list(output_names), {"images": images.float().numpy()})
        return tuple(torch.from_numpy(o) for o in outputs)

    return run


def torch_runner(module: nn.Module) -> Runner:
    """Eager PyTorch ``images -> outputs`` (tuple), in inference mode."""
    module.eval()

    def run(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            out = module(images.float())
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return run


def make_runner(
    module: nn.Module, runtime: str, input_size: int, output_names: Sequence[str]
) -> Runner:
    """``runtime``: ``onnx`` (ONNX Runtime, CPU) or ``torch`` (eager, module's device)."""
    if runtime == "onnx":
        return onnx_runner(module, input_size, output_names)
    if runtime == "torch":
        return torch_runner(module)
    raise ConfigError(f"unknown runtime {runtime!r}; valid: onnx, torch")
