"""Run a torch module through ONNX Runtime or OpenVINO, usually faster than eager PyTorch
on CPU.

Used for the frozen trunk of the CPU fast path and for batch evaluation. :func:`export_onnx`
is the project's only call of ``torch.onnx.export``: the model package of ``flowerclf
export`` is written with it too. ``auto`` is OpenVINO where it is installed (on the CPUs
measured it runs these CNNs at least as fast as ONNX Runtime, often faster), else ONNX
Runtime.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from torch import nn

from flowerclf.core.errors import ConfigError
from flowerclf.core.package_format import INPUT_NAME
from flowerclf.inference.backends import onnx_session_options
from flowerclf.inference.openvino_backend import compile_config, import_openvino, openvino_available

Runner = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
ONNX_OPSET = 17
RUNTIMES = ("auto", "onnx", "openvino", "torch")


def export_onnx(
    module: nn.Module,
    path: Path,
    input_size: int,
    output_names: Sequence[str],
    opset: int = ONNX_OPSET,
) -> Path:
    """Export ``module`` (eval mode) to ``path``: the project's one torch -> ONNX export.

    The graph takes ``images`` ``(N, 3, S, S)`` float32 with a dynamic batch axis and
    returns the module's outputs under ``output_names``, in order. Checks (``onnx.checker``,
    parity with PyTorch) are separate: :mod:`flowerclf.export.onnx_model`.
    """
    module.eval()
    example = torch.zeros(1, 3, input_size, input_size)
    dynamic = {INPUT_NAME: {0: "batch"}} | {name: {0: "batch"} for name in output_names}
    with warnings.catch_warnings():
        # We choose the TorchScript exporter on purpose (below); its deprecation notice
        # would only repeat that on every export.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter handles every timm model we ship
        )
    with torch.inference_mode():
        outputs = module(example)
    _pin_output_shapes(path, outputs if isinstance(outputs, (tuple, list)) else (outputs,))
    return path


def _pin_output_shapes(path: Path, example_outputs: Sequence[torch.Tensor]) -> None:
    """Give every non-batch output dimension its real size.

    The exporter leaves some of them symbolic (e.g. after the L2 normalisation of the
    embeddings); consumers that read shapes from the graph, such as Triton's config
    check, need the real widths.
    """
    model = onnx.load(str(path))
    for output, example in zip(model.graph.output, example_outputs, strict=True):
        dims = list(output.type.tensor_type.shape.dim)
        if len(dims) != example.dim():  # rank unknown to the exporter: leave it so
            continue
        for dim, size in zip(dims[1:], example.shape[1:], strict=True):
            if not dim.dim_value:
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
    onnx.save(model, str(path))


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
        outputs = session.run(list(output_names), {INPUT_NAME: images.float().numpy()})
        return tuple(torch.from_numpy(o) for o in outputs)

    return run


def openvino_runner(
    module: nn.Module, input_size: int, output_names: Sequence[str], threads: int | None = None
) -> Runner:
    """Export ``module`` to a temporary ONNX file, compile it with OpenVINO (fp32) and
    return ``images -> outputs``. One infer request: the caller runs one batch at a time."""
    ov = import_openvino()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(module, Path(tmp) / "model.onnx", input_size, output_names)
        compiled = ov.Core().compile_model(str(path), "CPU", compile_config(threads))
    request = compiled.create_infer_request()

    def run(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        request.infer({INPUT_NAME: images.float().numpy()})
        # Copies: the request reuses its output buffers on the next call.
        return tuple(torch.from_numpy(request.get_tensor(n).data.copy()) for n in output_names)

    return run


def resolve_runtime(runtime: str) -> str:
    """``auto`` -> ``openvino`` where OpenVINO is installed, else ``onnx``; others as given."""
    if runtime == "auto":
        return "openvino" if openvino_available() else "onnx"
    return runtime


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
    """``runtime``: ``auto`` (see :func:`resolve_runtime`), ``onnx`` (ONNX Runtime, CPU),
    ``openvino`` (OpenVINO fp32, CPU) or ``torch`` (eager, the module's device)."""
    runtime = resolve_runtime(runtime)
    if runtime == "onnx":
        return onnx_runner(module, input_size, output_names)
    if runtime == "openvino":
        return openvino_runner(module, input_size, output_names)
    if runtime == "torch":
        return torch_runner(module)
    raise ConfigError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
