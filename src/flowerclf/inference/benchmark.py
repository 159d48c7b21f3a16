"""``flowerclf benchmark``: PyTorch eager vs ONNX Runtime fp32 vs int8, on the same images.

Each runtime runs in its own fresh process (so peak resident memory is its own, and one
runtime's thread pools cannot slow another), one after the other, on the same
preprocessed images; preprocessing is excluded from those figures. ``end_to_end`` runs
``Classifier.predict`` on the image files: decoding, preprocessing and ONNX fp32, which
is what users get. With ``--targets FILE`` the report also says which of a project's
goals (e.g. this project's scripts/benchmark_targets.json) the figures meet.
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
from flowerclf.core.hardware import cpu_description, physical_cores
from flowerclf.core.imaging import list_images
from flowerclf.core.package_format import GALLERY_DIR, ModelPackage, load_package
from flowerclf.core.preprocess import preprocess_eval
from flowerclf.inference.backends import create_backend
from flowerclf.inference.classifier import Classifier
from flowerclf.inference.inputs import to_rgb

RUNTIME_BACKENDS = {"torch": "torch", "onnx_fp32": "onnx", "onnx_int8": "onnx_int8"}
MIN_SECONDS = 3.0  # per throughput measurement: long enough to average out jitter
WORKING_SET = 64  # preprocessed images a runtime process holds (cycled for throughput)
# The figures a targets file (``--targets``) may set goals for, and which way is better.
# The goals themselves are a project's, not the library's: this project keeps its own in
# scripts/benchmark_targets.json.
TARGET_FIGURES = {
    "onnx_fp32_vs_torch": "higher",
    "onnx_fp32_p50_ms": "lower",
    "onnx_int8_vs_fp32": "higher",
    "int8_accuracy_drop_points": "lower",
}


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _percentile_ms(samples: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000, q)), 3)


def _measure_runtime(
    model: str, backend: str, arrays_file: str, batch_size: int, latency_runs: int,
    threads: int | None,
) -> dict[str, float]:  # fmt: skip
    """Child process: load one backend, time batch-1 latency and batch throughput."""

    images = np.load(arrays_file)
    rss_before = _peak_rss_mb()
    started = time.perf_counter()
    runtime = create_backend(load_package(model), backend, threads)
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
    return {
        "throughput_ips": round(done / seconds, 1),
        "p50_ms": _percentile_ms(latencies, 50),
        "p95_ms": _percentile_ms(latencies, 95),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "model_rss_mb": round(_peak_rss_mb() - rss_before, 1),
        "load_s": round(load_s, 3),
        "batches_timed": count,
    }


def _measure_end_to_end(
    model: str, paths: list[str], batch_size: int, threads: int | None
) -> dict[str, float]:
    """Child process: files -> predictions through the public API (ONNX fp32)."""

    classifier = Classifier.load(model, backend="onnx", batch_size=batch_size, threads=threads)
    classifier.predict_each(paths[:batch_size])  # warm-up
    t0 = time.perf_counter()
    results = classifier.predict_each(paths)
    seconds = time.perf_counter() - t0
    errors = sum(1 for r in results if not hasattr(r, "predicted_class"))
    return {
        "end_to_end_ips": round(len(paths) / seconds, 1),
        "images": len(paths),
        "errors": errors,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
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
    runtimes: Sequence[str] = ("torch", "onnx_fp32", "onnx_int8"),
    threads: int | None = None,
    targets: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Measure every runtime on the same images; returns the JSON report.

    Args:
        targets: goals for some :data:`TARGET_FIGURES` (see :func:`load_targets`); the
            report's ``targets`` entry says for each figure whether it was met (``None``
            without a goal or without a measurement).
    """

    unknown = [r for r in runtimes if r not in RUNTIME_BACKENDS]
    if unknown:
        raise UsageError(f"unknown runtimes {unknown}; valid: {', '.join(RUNTIME_BACKENDS)}")
    model = str(Path(model).resolve())
    package = load_package(model)
    paths, source = find_images(package, images, num_images)
    # Preprocessing only: no runtime is loaded in this (parent) process.
    spec = package.spec
    arrays = np.stack([preprocess_eval(to_rgb(p), spec) for p in paths[:WORKING_SET]])
    report: dict[str, Any] = {
        "model": package.name,
        "version": package.version,
        "hardware": cpu_description(),
        "threads": threads or physical_cores(),
        "batch_size": batch_size,
        "images": {"count": len(paths), "source": source},
    }
    with tempfile.TemporaryDirectory() as tmp:
        arrays_file = str(Path(tmp) / "images.npy")
        np.save(arrays_file, arrays)
        for name in runtimes:
            if name == "onnx_int8" and package.file("onnx_int8") is None:
                report[name] = {"skipped": "the package has no int8 model"}
                continue
            report[name] = _in_child(
                _measure_runtime, model, RUNTIME_BACKENDS[name], arrays_file, batch_size,
                latency_runs, threads,
            )  # fmt: skip
    end_to_end = _in_child(_measure_end_to_end, model, paths, batch_size, threads)
    report["end_to_end_ips"] = end_to_end["end_to_end_ips"]
    report["end_to_end"] = end_to_end
    report["ratios"] = _ratios(report)
    int8_check = package.descriptor.get("checks", {}).get("int8")
    if int8_check:
        report["int8_accuracy"] = {
            k: int8_check[k]
            for k in (
                "split",
                "num_images",
                "fp32_accuracy",
                "int8_accuracy",
                "accuracy_drop_points",
            )
        }
    report["targets"] = judge_targets(report, targets or {})
    return report


def _ratios(report: dict[str, Any]) -> dict[str, float | None]:
    def ips(name: str) -> float | None:
        value = report.get(name, {}).get("throughput_ips")
        return float(value) if value else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    fp32, torch_ips, int8 = ips("onnx_fp32"), ips("torch"), ips("onnx_int8")
    p50 = {n: report.get(n, {}).get("p50_ms") for n in ("torch", "onnx_fp32", "onnx_int8")}
    return {
        "onnx_fp32_vs_torch": ratio(fp32, torch_ips),
        "onnx_int8_vs_fp32": ratio(int8, fp32),
        "onnx_fp32_vs_torch_latency": ratio(p50["torch"], p50["onnx_fp32"]),
        "onnx_int8_vs_fp32_latency": ratio(p50["onnx_fp32"], p50["onnx_int8"]),
        "end_to_end_vs_onnx_fp32": ratio(report.get("end_to_end_ips"), fp32),
    }


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
    }
    judged = {}
    for figure, better in TARGET_FIGURES.items():
        value, goal = measured[figure], targets.get(figure)
        met = None
        if value is not None and goal is not None:
            met = value >= goal if better == "higher" else value <= goal
        judged[figure] = {"value": value, "target": goal, "met": met}
    return judged


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"model {report['model']} ({report['version']}) on {report['hardware']}, "
        f"{report['threads']} threads, batch {report['batch_size']}",
        f"images: {report['images']['count']} from {report['images']['source']}",
        "",
        f"{'runtime':<11} {'img/s @bs':>10} {'p50 ms':>8} {'p95 ms':>8} {'peak RSS MB':>12}",
    ]
    for name in RUNTIME_BACKENDS:
        row = report.get(name)
        if not row:
            continue
        if "skipped" in row:
            lines.append(f"{name:<11} skipped: {row['skipped']}")
            continue
        lines.append(
            f"{name:<11} {row['throughput_ips']:>10.1f} {row['p50_ms']:>8.2f} "
            f"{row['p95_ms']:>8.2f} {row['peak_rss_mb']:>12.0f}"
        )
    lines.append(f"end-to-end (decode + preprocess + ONNX fp32): {report['end_to_end_ips']} img/s")
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
