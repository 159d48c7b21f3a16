"""TensorRT engine from the package's ONNX model (only where a GPU and TensorRT exist)."""

from __future__ import annotations

import logging
from pathlib import Path

from flowerclf.core.errors import ExportError, TensorRTUnavailableError
from flowerclf.core.package_format import INPUT_NAME
from flowerclf.models.torch_backends import tensorrt_available

log = logging.getLogger(__name__)

MAX_BATCH = 32


def build_engine(onnx_path: Path, plan_path: Path, input_size: int, fp16: bool = False) -> Path:
    """Parse ``onnx_path`` and serialise an engine with a dynamic batch profile (1..32).

    Raises:
        TensorRTUnavailableError: no TensorRT package or no CUDA GPU here.
    """
    ok, why = tensorrt_available()
    if not ok:
        raise TensorRTUnavailableError(f"TensorRT export unavailable: {why}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode in TensorRT >= 10; the flag is needed on 8.x.
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if fp16:
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast fp16; building an fp32 engine")
        else:
            config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shape = (3, input_size, input_size)
    profile.set_shape(INPUT_NAME, (1, *shape), (MAX_BATCH // 2, *shape), (MAX_BATCH, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build an engine (see its log above)")
    plan_path.write_bytes(bytes(serialized))
    return plan_path
