"""An OpenVINO int8 model, quantised by NNCF post-training quantisation; and how much
accuracy OpenVINO's bf16 mode costs.

NNCF calibrates activation ranges on training images (the same ones as the ONNX int8
model) and writes an OpenVINO IR (``.xml`` graph + ``.bin`` weights). int8 pays only on
CPUs with int8 dot-product units (VNNI, AMX); ``backend="auto"`` measures it on each
machine, and chooses it only when it is faster there and the accuracy this step measures
on the evaluation split stays within the budget
(:data:`flowerclf.inference.auto.ACCURACY_BUDGET_POINTS`). The same comparison measures
the fp32 model computed in bfloat16 (``backend="openvino_bf16"``), on CPUs with bf16 units.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from flowerclf.core.errors import UsageError
from flowerclf.core.package_format import INPUT_NAME
from flowerclf.export.quantize import Int8Report, int8_report
from flowerclf.inference.openvino_backend import compile_config

RUN_BATCH = 32
METHOD = "nncf"
BF16_METHOD = "bf16 inference precision"


def openvino_int8_unavailable() -> str | None:
    """Why this machine cannot write the OpenVINO int8 model (None when it can)."""
    for module in ("openvino", "nncf"):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"{module} is not installed (pip install 'flowerclf[openvino]' nncf): {exc}"
    return None


def quantize_openvino_int8(fp32_onnx: Path, out_xml: Path, calibration: np.ndarray) -> Path:
    """Write the int8 IR of ``fp32_onnx`` to ``out_xml`` (and its ``.bin`` beside it)."""
    import nncf
    import openvino as ov

    if len(calibration) == 0:
        raise UsageError("OpenVINO int8 quantisation needs calibration images")
    model = ov.Core().read_model(str(fp32_onnx))
    items = [calibration[i : i + 1] for i in range(len(calibration))]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(items, lambda item: {INPUT_NAME: item}),
        subset_size=len(items),
        preset=nncf.QuantizationPreset.MIXED,  # asymmetric activations: after ReLU6 too
    )
    # fp32 weights in the .bin: compressing them to fp16 would add a second rounding.
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml


def _runner(model_path: Path, precision: str = "f32") -> Any:
    import openvino as ov

    compiled = ov.Core().compile_model(str(model_path), "CPU", compile_config(None, precision))
    request = compiled.create_infer_request()

    def run(images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), RUN_BATCH):
            request.infer({INPUT_NAME: np.ascontiguousarray(images[start : start + RUN_BATCH])})
            out.append(request.get_tensor("probabilities").data.copy())
        return np.concatenate(out)

    return run


def compare_openvino(
    fp32_onnx: Path,
    image_chunks: Iterable[np.ndarray],
    labels: np.ndarray,
    *,
    int8_xml: Path | None = None,
    calibration_images: int = 0,
) -> Int8Report:
    """OpenVINO fp32 vs a reduced precision on the same images: accuracy, top-1 agreement,
    throughput. The int8 model ``int8_xml``, or (None) ``fp32_onnx`` computed in bf16; the
    report's ``int8_*`` fields hold the reduced precision's figures either way."""
    fp32 = _runner(fp32_onnx)
    int8 = _runner(int8_xml) if int8_xml is not None else _runner(fp32_onnx, "bf16")
    predictions: dict[str, list[np.ndarray]] = {"fp32": [], "int8": []}
    seconds = {"fp32": 0.0, "int8": 0.0}
    for position, images in enumerate(image_chunks):
        for name, run in (("fp32", fp32), ("int8", int8)):
            if position == 0:
                run(images[:RUN_BATCH])  # warm-up, not timed
            started = time.perf_counter()
            predictions[name].append(run(images).argmax(1))
            seconds[name] += time.perf_counter() - started
    if not predictions["fp32"]:
        raise UsageError("the int8 comparison needs at least one evaluation image")
    return int8_report(
        METHOD if int8_xml is not None else BF16_METHOD,
        labels,
        (np.concatenate(predictions["fp32"]), np.concatenate(predictions["int8"])),
        (seconds["fp32"], seconds["int8"]),
        calibration_images,
    )
