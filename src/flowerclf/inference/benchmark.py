"""``flowerclf benchmark``: PyTorch eager, ONNX Runtime and OpenVINO (fp32 and int8), and
``auto`` (what :class:`Classifier` picks on this machine), on the same images.

Each runtime runs in its own fresh process (so peak resident memory is its own, and one
runtime's thread pools cannot slow another), one after the other, on the same
preprocessed images; preprocessing is excluded from those figures. ``end_to_end`` runs
``Classifier.predict`` on the image files with the default backend (``auto``): decoding,
preprocessing and the model, which is what users get. ``limit`` is what the arithmetic
allows: the measured fp32 matrix-product rate over the model's FLOPs per image; each
runtime's ``limit_fraction`` is the share of it that runtime reaches. With ``--targets
FILE`` the report also says which of a project's goals (e.g. this project's
scripts/benchmark_targets.json) the figures meet.
"""

from __future__ import annotations

import difflib
import json
import multiprocessing as mp
import platform
import random
import resource
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowerclf.core.errors import UsageError
from flowerclf.core.hardware import cpu_description, cpu_features, physical_cores
from flowerclf.core.imaging import list_images
from flowerclf.core.package_format import GALLERY_DIR, ModelPackage, load_package
from flowerclf.core.preprocess import preprocess_eval
from flowerclf.inference.auto import AutoBackend
from flowerclf.inference.backends import create_backend
from flowerclf.inference.classifier import Classifier
from flowerclf.inference.cost import matmul_gflops, model_gflop_per_image
from flowerclf.inference.inputs import to_rgb

RUNTIME_BACKENDS = {
    "torch": "torch",
    "onnx_fp32": "onnx",
    "onnx_int8": "onnx_int8",
    "openvino_fp32": "openvino",
    "openvino_int8": "openvino_int8",
    "openvino_bf16": "openvino_bf16",
    "auto": "auto",
}
# What the report copies from the export's int8 checks (accuracy measured on the test split).
INT8_ACCURACY_KEYS = ("split", "num_images", "fp32_accuracy", "int8_accuracy",
                      "accuracy_drop_points")  # fmt: skip
# Runtimes whose model is a separate package file: skipped when the package has none.
PACKAGE_FILES = {"onnx_int8": "onnx_int8", "openvino_int8": "openvino_int8"}
MIN_SECONDS = 3.0  # per throughput measurement: long enough to average out jitter
WORKING_SET = 64  # preprocessed images a runtime process holds (cycled for throughput)
STAGE_IMAGES = 128  # images timed one by one for the decode / preprocess figures
# The figures a targets file (``--targets``) may set goals for, and which way is better.
# The goals themselves are a project's, not the library's: this project keeps its own in
# scripts/benchmark_targets.json.
TARGET_FIGURES = {
    "onnx_fp32_vs_torch": "higher",
    "onnx_fp32_p50_ms": "lower",
    "onnx_int8_vs_fp32": "higher",
    "int8_accuracy_drop_points": "lower",
    "auto_vs_onnx_fp32": "higher",
    "auto_vs_onnx_fp32_latency": "higher",
    "end_to_end_vs_auto": "higher",
}


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _percentile_ms(samples: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000, q)), 3)


def _measure_runtime(
    model: str, backend: str, arrays_file: str, batch_size: int, latency_runs: int,
    threads: int | None, verify: bool = True,
) -> dict[str, float]:  # fmt: skip
    """Child process: load one backend, time batch-1 latency and batch throughput."""

    images = np.load(arrays_file)
    rss_before = _peak_rss_mb()
    started = time.perf_counter()
    runtime = create_backend(load_package(model, verify=verify), backend, threads)
    load_s = time.perf_counter() - started
    for i in range(5):
        runtime.run(images[i : i + 1])
    latencies = []
    for i in range(latency_runs):
        one = images[i % len(images)][None]
        t0 = time.perf_counter()
        runtime.run(one)
        latencies.append(time.perf_counter() - t0)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or [images]
    runtime.run(batches[0])
    done, count, t0 = 0, 0, time.perf_counter()
    while count < 5 or time.perf_counter() - t0 < MIN_SECONDS:
        batch = batches[count % len(batches)]
        runtime.run(batch)
        done += len(batch)
        count += 1
    seconds = time.perf_counter() - t0
    chosen = (
        {"backend": runtime.name, "choice": runtime.choice.to_dict()}
        if isinstance(runtime, AutoBackend)
        else {}
    )
    return chosen | {
        "throughput_ips": round(done / seconds, 1),
        "p50_ms": _percentile_ms(latencies, 50),
        "p95_ms": _percentile_ms(latencies, 95),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "model_rss_mb": round(_peak_rss_mb() - rss_before, 1),
        "load_s": round(load_s, 3),
        "batches_timed": count,
    }


def _measure_end_to_end(
    model: str, paths: list[str], batch_size: int, threads: int | None, verify: bool = True
) -> dict[str, float]:
    """Child process: files -> predictions through the public API (default backend)."""

    classifier = Classifier.load(model, batch_size=batch_size, threads=threads, verify=verify)
    classifier.predict_each(paths[:batch_size])  # warm-up
    t0 = time.perf_counter()
    results = classifier.predict_each(paths)
    seconds = time.perf_counter() - t0
    errors = sum(1 for r in results if not hasattr(r, "predicted_class"))
    spec = classifier.spec
    classifier.close()
    return {
        "end_to_end_ips": round(len(paths) / seconds, 1),
        "backend": classifier.backend_name,
        "images": len(paths),
        "errors": errors,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "stages": _measure_stages(paths[:STAGE_IMAGES], spec),
    }


def _measure_stages(paths: Sequence[str], spec: Any) -> dict[str, float]:
    """One core's milliseconds per image for decoding (file -> upright RGB) and for
    preprocessing (resize, crop, normalise): the work around the model."""
    decode_s = preprocess_s = 0.0
    for path in paths:
        t0 = time.perf_counter()
        image = to_rgb(path, target_short_side=spec.resize_size)  # as Classifier does
        t1 = time.perf_counter()
        preprocess_eval(image, spec)
        preprocess_s += time.perf_counter() - t1
        decode_s += t1 - t0
    count = max(1, len(paths))
    return {
        "decode_ms": round(1000 * decode_s / count, 3),
        "preprocess_ms": round(1000 * preprocess_s / count, 3),
        "images": len(paths),
    }


def end_to_end_ceiling(model_ips: float, host_ms: float, cores: int) -> float:
    """The highest end-to-end / model-only throughput ratio ``cores`` cores allow.

    The model at ``model_ips`` keeps every core busy, so each image costs ``cores /
    model_ips`` core-seconds of it, plus ``host_ms`` core-milliseconds of decoding and
    preprocessing that no thread pool can hide when there are no idle cores:
    ``1 / (1 + host_s * model_ips / cores)``.
    """
    return 1.0 / (1.0 + host_ms / 1000.0 * model_ips / max(1, cores))


def _measure_limit(model: str, verify: bool) -> dict[str, Any]:
    """Child process: the machine's fp32 matmul rate and the model's FLOPs per image."""
    by_engine = matmul_gflops()
    gflops = max(rate for rate in by_engine.values() if rate is not None)
    per_image = model_gflop_per_image(load_package(model, verify=verify))
    return {
        "matmul_gflops": gflops,
        "matmul_gflops_by_engine": by_engine,
        "model_gflop_per_image": per_image,
        "limit_ips": round(gflops / per_image, 1) if per_image else None,
        "how": "best fp32 2048x2048 matmul (NumPy BLAS, OpenVINO); FLOPs of Conv/MatMul/Gemm "
        "at batch 1",
    }


def _in_child(function: Any, *args: Any) -> Any:
    context = mp.get_context("spawn")  # a fresh interpreter: no inherited threads or memory
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def find_images(
    package: ModelPackage, images: str | None, count: int, seed: int = 0
) -> tuple[list[str], str]:
    """Benchmark images: ``images`` dir, else the package's dataset images, else its gallery."""
    candidates: list[tuple[Path | None, str]] = [
        (Path(images) if images else None, "--images"),
    ]
    if not images:
        root = package.descriptor.get("source", {}).get("image_root")
        candidates.append((Path(root) if root else None, "dataset images of the package"))
        candidates.append((package.file("gallery") or package.root / GALLERY_DIR,
                           "gallery thumbnails (small: end-to-end is optimistic)"))  # fmt: skip
    for directory, label in candidates:
        if directory is None:
            continue
        if not directory.is_dir():
            if label == "--images":
                raise FileNotFoundError(f"--images {directory} is not a directory")
            continue
        files = [str(p) for p in list_images(directory)]
        if files:
            random.Random(seed).shuffle(files)
            return files[:count], f"{label}: {directory}"
    raise FileNotFoundError(
        "no benchmark images: pass --images DIR (the package's dataset and gallery are missing)"
    )


def run_benchmark(
    model: str,
    images: str | None = None,
    num_images: int = 256,
    batch_size: int = 32,
    latency_runs: int = 100,
    runtimes: Sequence[str] = ("torch", "onnx_fp32", "onnx_int8", "openvino_fp32", "auto"),
    threads: int | None = None,
    verify: bool = True,
    targets: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Measure every runtime on the same images; returns the JSON report.

    Args:
        verify: check the package's sha256 (here and in every child process).
        targets: goals for some :data:`TARGET_FIGURES` (see :func:`load_targets`); the
            report's ``targets`` entry says for each figure whether it was met (``None``
            without a goal or without a measurement).
    """

    unknown = [r for r in runtimes if r not in RUNTIME_BACKENDS]
    if unknown:
        raise UsageError(f"unknown runtimes {unknown}; valid: {', '.join(RUNTIME_BACKENDS)}")
    model = str(Path(model).resolve())
    package = load_package(model, verify=verify)
    paths, source = find_images(package, images, num_images)
    # Preprocessing only: no runtime is loaded in this (parent) process.
    spec = package.spec
    arrays = np.stack([preprocess_eval(to_rgb(p), spec) for p in paths[:WORKING_SET]])
    report: dict[str, Any] = {
        "model": package.name,
        "version": package.version,
        "hardware": cpu_description(),
        "cpu_features": (features := cpu_features()),
        "threads": threads or physical_cores(),
        "batch_size": batch_size,
        "images": {"count": len(paths), "source": source},
    }
    with tempfile.TemporaryDirectory() as tmp:
        arrays_file = str(Path(tmp) / "images.npy")
        np.save(arrays_file, arrays)
        for name in runtimes:
            if name in PACKAGE_FILES and package.file(PACKAGE_FILES[name]) is None:
                report[name] = {"skipped": f"the package has no {name} model"}
                continue
            if name == "openvino_bf16" and not (features["bf16"] or features["amx"]):
                report[name] = {"skipped": "this CPU has no bf16 units (AVX512-BF16 or AMX)"}
                continue
            report[name] = _in_child(
                _measure_runtime, model, RUNTIME_BACKENDS[name], arrays_file, batch_size,
                latency_runs, threads, verify,
            )  # fmt: skip
    end_to_end = _in_child(_measure_end_to_end, model, paths, batch_size, threads, verify)
    report["end_to_end_ips"] = end_to_end["end_to_end_ips"]
    report["end_to_end"] = end_to_end
    report["limit"] = _in_child(_measure_limit, model, verify)
    _add_limit_fractions(report)
    report["ratios"] = _ratios(report)
    checks = package.descriptor.get("checks", {})
    for check, key in (("int8", "int8_accuracy"), ("openvino_int8", "openvino_int8_accuracy"),
                       ("openvino_bf16", "openvino_bf16_accuracy")):  # fmt: skip
        if checks.get(check, {}).get("accuracy_drop_points") is not None:
            report[key] = {k: checks[check][k] for k in INT8_ACCURACY_KEYS}
    report["targets"] = judge_targets(report, targets or {})
    return report


def _add_limit_fractions(report: dict[str, Any]) -> None:
    """Each measured runtime's throughput as a share of the arithmetic limit."""
    limit_ips = report["limit"].get("limit_ips")
    for name in RUNTIME_BACKENDS:
        row = report.get(name)
        if limit_ips and row and row.get("throughput_ips"):
            row["limit_fraction"] = round(row["throughput_ips"] / limit_ips, 3)


def _ratios(report: dict[str, Any]) -> dict[str, float | None]:
    def ips(name: str) -> float | None:
        value = report.get(name, {}).get("throughput_ips")
        return float(value) if value else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    p50 = {n: report.get(n, {}).get("p50_ms") for n in RUNTIME_BACKENDS}
    fp32 = ips("onnx_fp32")
    return {
        "onnx_fp32_vs_torch": ratio(fp32, ips("torch")),
        "onnx_int8_vs_fp32": ratio(ips("onnx_int8"), fp32),
        "onnx_fp32_vs_torch_latency": ratio(p50["torch"], p50["onnx_fp32"]),
        "onnx_int8_vs_fp32_latency": ratio(p50["onnx_fp32"], p50["onnx_int8"]),
        "end_to_end_vs_onnx_fp32": ratio(report.get("end_to_end_ips"), fp32),
        "openvino_fp32_vs_onnx_fp32": ratio(ips("openvino_fp32"), fp32),
        "openvino_int8_vs_fp32": ratio(ips("openvino_int8"), ips("openvino_fp32")),
        "openvino_bf16_vs_fp32": ratio(ips("openvino_bf16"), ips("openvino_fp32")),
        "auto_vs_onnx_fp32": ratio(ips("auto"), fp32),
        "auto_vs_onnx_fp32_latency": ratio(p50["onnx_fp32"], p50["auto"]),
        "end_to_end_vs_auto": ratio(report.get("end_to_end_ips"), ips("auto")),
        "end_to_end_ceiling_vs_auto": _ceiling(report, ips("auto")),
    }


def _ceiling(report: dict[str, Any], auto_ips: float | None) -> float | None:
    stages = report.get("end_to_end", {}).get("stages")
    if not stages or not auto_ips:
        return None
    host_ms = stages["decode_ms"] + stages["preprocess_ms"]
    return round(end_to_end_ceiling(auto_ips, host_ms, int(report["threads"])), 2)


def load_targets(path: str | Path) -> dict[str, float]:
    """Read a targets file: ``{"targets": {figure: goal, ...}}`` (other keys are notes).

    Raises:
        FileNotFoundError: no such file.
        UsageError: not JSON, an unknown figure, or a goal that is not a number.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"targets file {path} is not valid JSON: {exc}") from None
    goals = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(goals, dict):
        raise UsageError(f'targets file {path} needs a "targets" object: {{figure: goal}}')
    for figure, goal in goals.items():
        if figure not in TARGET_FIGURES:
            close = difflib.get_close_matches(figure, TARGET_FIGURES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(
                f"targets file {path}: unknown figure {figure!r}{hint}; valid: "
                f"{', '.join(TARGET_FIGURES)}"
            )
        if isinstance(goal, bool) or not isinstance(goal, (int, float)):
            raise UsageError(f"targets file {path}: goal for {figure!r} must be a number")
    return {figure: float(goal) for figure, goal in goals.items()}


def judge_targets(
    report: dict[str, Any], targets: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """Every target figure: its measured value, the goal (if any) and whether it was met."""
    ratios = report["ratios"]
    measured = {
        "onnx_fp32_vs_torch": ratios["onnx_fp32_vs_torch"],
        "onnx_fp32_p50_ms": report.get("onnx_fp32", {}).get("p50_ms"),
        "onnx_int8_vs_fp32": ratios["onnx_int8_vs_fp32"],
        "int8_accuracy_drop_points": report.get("int8_accuracy", {}).get("accuracy_drop_points"),
        "auto_vs_onnx_fp32": ratios.get("auto_vs_onnx_fp32"),
        "auto_vs_onnx_fp32_latency": ratios.get("auto_vs_onnx_fp32_latency"),
        "end_to_end_vs_auto": ratios.get("end_to_end_vs_auto"),
    }
    judged = {}
    for figure, better in TARGET_FIGURES.items():
        value, goal = measured[figure], targets.get(figure)
        met = None
        if value is not None and goal is not None:
            met = value >= goal if better == "higher" else value <= goal
        judged[figure] = {"value": value, "target": goal, "met": met}
    return judged


def limit_line(report: dict[str, Any]) -> str | None:
    """One line: the machine's fp32 rate, the model's FLOPs and the ceiling they make."""
    limit = report.get("limit")
    if not limit or not limit.get("limit_ips"):
        return None
    features = ", ".join(k for k, v in report.get("cpu_features", {}).items() if v) or "none"
    return (
        f"limit: fp32 matmul {limit['matmul_gflops']} GFLOP/s / "
        f"{limit['model_gflop_per_image']} GFLOP per image = {limit['limit_ips']} img/s "
        f"(CPU features: {features})"
    )


def stages_line(report: dict[str, Any]) -> str | None:
    """One line: the work around the model per image, and the end-to-end ratio it allows."""
    stages = report.get("end_to_end", {}).get("stages")
    ceiling = report.get("ratios", {}).get("end_to_end_ceiling_vs_auto")
    if not stages or ceiling is None:
        return None
    return (
        f"around the model, per image on one core: decode {stages['decode_ms']:.2f} ms + "
        f"preprocess {stages['preprocess_ms']:.2f} ms; with {report['threads']} cores that "
        f"allows at most {ceiling:.2f}x of auto's model-only throughput end to end"
    )


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"model {report['model']} ({report['version']}) on {report['hardware']}, "
        f"{report['threads']} threads, batch {report['batch_size']}",
        f"images: {report['images']['count']} from {report['images']['source']}",
        "",
        f"{'runtime':<14} {'img/s @bs':>10} {'of limit':>9} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'peak RSS MB':>12}",
    ]
    for name in RUNTIME_BACKENDS:
        row = report.get(name)
        if not row:
            continue
        if "skipped" in row:
            lines.append(f"{name:<14} skipped: {row['skipped']}")
            continue
        fraction = row.get("limit_fraction")
        lines.append(
            f"{name:<14} {row['throughput_ips']:>10.1f} "
            f"{'' if fraction is None else f'{fraction:.0%}':>9} {row['p50_ms']:>8.2f} "
            f"{row['p95_ms']:>8.2f} {row['peak_rss_mb']:>12.0f}"
        )
    if "backend" in report.get("auto", {}):
        lines.append(f"auto picked: {report['auto']['backend']}")
    backend = report.get("end_to_end", {}).get("backend", "auto")
    lines.append(f"end-to-end (decode + preprocess + {backend}): {report['end_to_end_ips']} img/s")
    if line := stages_line(report):
        lines.append(line)
    if line := limit_line(report):
        lines.append(line)
    lines.append("")
    lines.extend(f"{k}: {v}" for k, v in report["ratios"].items())
    lines.append("")
    for key, target in report["targets"].items():
        if target["target"] is None:
            lines.append(f"target {key}: {target['value']} (no goal given: --targets FILE)")
            continue
        status = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
        lines.append(f"target {key}: {target['value']} (target {target['target']}): {status}")
    return "\n".join(lines) + "\n"
