"""int8 ONNX models: static QDQ quantisation calibrated on training images.

Dynamic quantisation (weights only, activations quantised on the fly) is much *slower*
than fp32 for these convolutional nets on ONNX Runtime CPU, so the default is static QDQ
with per-channel weights and activation ranges calibrated on training images, plus:

* ``reduce_range`` (7-bit weights): CPUs without VNNI (AVX2 only, like the 2-core dev
  machine) multiply u8 x s8 with ``vpmaddubsw``, whose int16 sums saturate;
* ``keep_fp32_edges``: the stem convolution, the last 1x1 convolution and the linear heads
  stay fp32: the most range-sensitive layers, a small share of the compute.

``python scripts/int8_variants.py`` measures each of these choices (accuracy and speed on
a prepared test split); its figures are in the issue notes.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from flowerclf.core.errors import UsageError
from flowerclf.core.package_format import INPUT_NAME
from flowerclf.export.onnx_model import RUN_BATCH, cpu_session, run_in_batches

log = logging.getLogger(__name__)

METHODS = ("static", "dynamic")
CALIBRATION_BATCH = 16


class _ArrayReader:
    """onnxruntime ``CalibrationDataReader`` over an in-memory array, in small batches."""

    def __init__(self, images: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [images[i : i + batch] for i in range(0, len(images), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, np.float32)}

    def rewind(self) -> None:  # part of the reader protocol; calibration reads once
        pass


def calibration_indices(num_train: int, count: int, seed: int = 0) -> np.ndarray:
    """Which training images (by position) calibrate the int8 model: a seeded sample."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_train, min(count, num_train), replace=False))


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    calibration: np.ndarray | None,
    method: str = "static",
    *,
    reduce_range: bool = True,
    keep_fp32_edges: bool = True,
) -> Path:
    """Write an int8 copy of ``fp32_path``.

    Args:
        calibration: preprocessed training images ``(N, 3, S, S)`` (static only).
        method: ``static`` (QDQ, per-channel, calibrated) or ``dynamic``.
        reduce_range: static only: 7-bit weights (see the module docstring).
        keep_fp32_edges: static only: stem, last convolution and heads stay fp32.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise UsageError(f"unknown int8 method {method!r}; valid: {', '.join(METHODS)}")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference + graph cleanup first, as onnxruntime recommends before quantising.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if method == "dynamic":
            quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8)
            return out_path
        if calibration is None or len(calibration) == 0:
            raise UsageError("static int8 quantisation needs calibration images")
        reader = _ArrayReader(calibration)
        quantize_static(
            str(prepared),
            str(out_path),
            reader,  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=reduce_range,
            # Softmax and the L2 normalisation always stay float; the heads (Gemm) too when
            # the edges are kept.
            op_types_to_quantize=["Conv", "Add", "Mul", "GlobalAveragePool"]
            + ([] if keep_fp32_edges else ["Gemm", "MatMul"]),
            nodes_to_exclude=_first_and_last_conv(prepared) if keep_fp32_edges else [],
        )
    return out_path


def _first_and_last_conv(path: Path) -> list[str]:
    import onnx

    convs = [node.name for node in onnx.load(str(path)).graph.node if node.op_type == "Conv"]
    return [convs[0], convs[-1]] if len(convs) >= 2 else convs


@dataclass(frozen=True)
class Int8Report:
    """fp32 vs int8 on the same preprocessed images (usually the test split)."""

    method: str
    num_images: int
    calibration_images: int
    fp32_accuracy: float
    int8_accuracy: float
    accuracy_drop_points: float
    top1_agreement: float
    fp32_ips: float
    int8_ips: float
    speedup: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def compare_int8(
    fp32_path: Path,
    int8_path: Path,
    image_chunks: Iterable[np.ndarray],
    labels: np.ndarray,
    method: str,
    calibration_images: int,
) -> Int8Report:
    """fp32 vs int8 accuracy, agreement and throughput on the same images.

    Args:
        image_chunks: the preprocessed images, in order, a chunk at a time (so a large
            split need not be in memory at once); ``labels`` has one label per image.
        calibration_images: how many images calibrated the int8 model (for the report).
    """
    fp32, int8 = cpu_session(fp32_path), cpu_session(int8_path)
    fp32_probs, int8_probs = [], []
    fp32_s = int8_s = 0.0
    for position, images in enumerate(image_chunks):
        if position == 0:  # warm-up, not timed
            run_in_batches(fp32, images[:RUN_BATCH], ["probabilities"])
            run_in_batches(int8, images[:RUN_BATCH], ["probabilities"])
        started = time.perf_counter()
        fp32_probs.append(run_in_batches(fp32, images, ["probabilities"])[0])
        fp32_s += time.perf_counter() - started
        started = time.perf_counter()
        int8_probs.append(run_in_batches(int8, images, ["probabilities"])[0])
        int8_s += time.perf_counter() - started
    if not fp32_probs:
        raise UsageError("the int8 comparison needs at least one evaluation image")
    return int8_report(
        method,
        labels,
        (np.concatenate(fp32_probs).argmax(1), np.concatenate(int8_probs).argmax(1)),
        (fp32_s, int8_s),
        calibration_images,
    )


def int8_report(
    method: str,
    labels: np.ndarray,
    top1: tuple[np.ndarray, np.ndarray],
    seconds: tuple[float, float],
    calibration_images: int,
) -> Int8Report:
    """The comparison's figures from each model's top-1 predictions (fp32, reduced
    precision) and the seconds each took on the same images."""
    fp32_top1, int8_top1 = top1
    if len(fp32_top1) != len(labels):
        raise ValueError(f"{len(fp32_top1)} images but {len(labels)} labels")
    fp32_acc = float((fp32_top1 == labels).mean())
    int8_acc = float((int8_top1 == labels).mean())
    fp32_ips = len(labels) / max(seconds[0], 1e-9)
    int8_ips = len(labels) / max(seconds[1], 1e-9)
    return Int8Report(
        method=method,
        num_images=len(labels),
        calibration_images=calibration_images,
        fp32_accuracy=round(fp32_acc, 6),
        int8_accuracy=round(int8_acc, 6),
        accuracy_drop_points=round(100 * (fp32_acc - int8_acc), 3),
        top1_agreement=round(float((fp32_top1 == int8_top1).mean()), 6),
        fp32_ips=round(fp32_ips, 1),
        int8_ips=round(int8_ips, 1),
        speedup=round(int8_ips / max(fp32_ips, 1e-9), 3),
    )
