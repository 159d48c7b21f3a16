"""What the arithmetic allows: the model's FLOPs per image and the machine's fp32 rate.

A runtime cannot classify faster than ``matmul GFLOP/s / model GFLOP per image`` (a large
fp32 matrix product is about the best rate a CPU sustains; measured with NumPy's BLAS and,
where installed, OpenVINO's kernels, keeping the best), so the benchmark prints each
runtime's throughput as a fraction of that limit. The FLOPs are counted from the ONNX graph
(Conv, MatMul and Gemm: everything else is a rounding error in a CNN).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flowerclf.core.package_format import INPUT_NAME, ModelPackage
from flowerclf.inference.openvino_backend import (
    compile_config,
    import_openvino,
    openvino_available,
)

COUNTED_OPS = ("Conv", "MatMul", "Gemm")
MATMUL_SIZE = 2048  # fp32 square matrices: large enough for the BLAS kernel's peak
MATMUL_SECONDS = 1.0


def _shapes(entries: list[dict[str, list[int]]]) -> list[list[int]]:
    return [next(iter(entry.values())) for entry in entries]


def _node_flops(op: str, inputs: list[list[int]], outputs: list[list[int]]) -> int:
    if not outputs:
        return 0
    out = int(np.prod(outputs[0]))
    if op == "Conv" and len(inputs) >= 2:
        # Each output element: one multiply-add per weight of its group (W is Cout x Cin/g x k x k).
        return 2 * out * int(np.prod(inputs[1][1:]))
    if op in ("MatMul", "Gemm") and inputs:
        return 2 * out * int(inputs[0][-1])  # A's inner dimension (the exporter never sets transA)
    return 0


def count_gflop(onnx_path: Path, input_size: int) -> float:
    """GFLOP (multiply and add counted apart) of one image through the model.

    The shapes are read from an ONNX Runtime profile of one unoptimised batch-1 run: TF-ported
    nets compute their "same" padding from ``Shape`` ops, which ONNX's static shape inference
    cannot follow, and ONNX Runtime is the base install (no ``onnx`` needed).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        session.run(None, {INPUT_NAME: np.zeros((1, 3, input_size, input_size), np.float32)})
        events = json.loads(Path(session.end_profiling()).read_text())
    flops = 0
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and args.get("op_name") in COUNTED_OPS:
            flops += _node_flops(
                args["op_name"],
                _shapes(args.get("input_type_shape", [])),
                _shapes(args.get("output_type_shape", [])),
            )
    return round(flops / 1e9, 6)


def model_gflop_per_image(package: ModelPackage) -> float:
    """The package's fp32 model's GFLOP per image (see :func:`count_gflop`)."""
    return count_gflop(package.require("onnx"), package.spec.input_size)


def _best_rate(run: Callable[[], object], size: int, seconds: float) -> float:
    run()  # warm-up: thread pool start, page faults, kernel selection
    best = 0.0
    started = time.perf_counter()
    while not best or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        run()
        best = max(best, 2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return round(best, 1)  # the best run: what the machine can do, not its noise


def numpy_matmul_gflops(size: int = MATMUL_SIZE, seconds: float = MATMUL_SECONDS) -> float:
    """fp32 GFLOP/s of ``size``-square NumPy matrix products (its BLAS, every thread)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    return _best_rate(lambda: a @ b, size, seconds)


def openvino_matmul_gflops(
    size: int = MATMUL_SIZE, seconds: float = MATMUL_SECONDS, threads: int | None = None
) -> float | None:
    """The same product through OpenVINO's fp32 kernels (None without OpenVINO). NumPy's
    BLAS may use narrower vector units than the CPU has (OpenBLAS picks AVX2 kernels on
    some AVX-512 CPUs), which would put the limit below what a runtime reaches."""
    if not openvino_available():
        return None
    ov = import_openvino()
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    a = ops.parameter([size, size], np.float32, name="a")
    product = ops.matmul(a, ops.constant(rng.standard_normal((size, size), np.float32)),
                         False, False)  # fmt: skip
    compiled = ov.Core().compile_model(ov.Model([product], [a]), "CPU", compile_config(threads))
    request = compiled.create_infer_request()
    x = rng.standard_normal((size, size), np.float32)
    return _best_rate(lambda: request.infer({0: x}), size, seconds)


def matmul_gflops(
    size: int = MATMUL_SIZE, seconds: float = MATMUL_SECONDS
) -> dict[str, float | None]:
    """Measured fp32 matmul GFLOP/s per engine (``numpy``, ``openvino``); the machine's
    rate is the best of them."""
    return {
        "numpy": numpy_matmul_gflops(size, seconds),
        "openvino": openvino_matmul_gflops(size, seconds),
    }
