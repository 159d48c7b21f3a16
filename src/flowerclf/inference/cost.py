"""What the arithmetic allows: the model's FLOPs per image and the machine's fp32 rate.

A runtime cannot classify faster than ``matmul GFLOP/s / model GFLOP per image`` (a large
fp32 matrix product is about the best rate a CPU sustains), so the benchmark prints each
runtime's throughput as a fraction of that limit. The FLOPs are counted from the ONNX graph
(Conv, MatMul and Gemm: everything else is a rounding error in a CNN).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from flowerclf.core.package_format import INPUT_NAME, ModelPackage

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


def matmul_gflops(size: int = MATMUL_SIZE, seconds: float = MATMUL_SECONDS) -> float:
    """Measured fp32 GFLOP/s of ``size``-square NumPy matrix products (BLAS, every thread)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up: thread pool start, page faults
    rates = []
    started = time.perf_counter()
    while not rates or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return round(max(rates), 1)  # the best run: what the machine can do, not its noise
