"""``backend="auto"``: the fastest runtime for this package on this machine.

Which runtime is fastest depends on the CPU (OpenVINO beats ONNX Runtime on some, not on
others; int8 pays only with int8 dot-product units), so it is measured, not assumed. At the
first load on a machine, every runtime that is installed and passes the package's checks
runs the same inputs for a few seconds, at batch 1 (latency) and at batch 32 (throughput);
the winner of each is cached on disk, keyed by the package's model files, the CPU and the
runtime versions, so later loads only read the cache.

A candidate qualifies when:

* fp32 runtimes: its outputs equal ONNX Runtime's (the reference) within the package's
  parity tolerance on the probe inputs;
* reduced precision (int8 models, OpenVINO in bf16): the export measured their accuracy drop
  on the evaluation split and it is within :data:`ACCURACY_BUDGET_POINTS`; bf16 also needs a
  CPU with bf16 units (AVX512-BF16 or AMX), where it pays.

``FLOWERCLF_AUTO_BACKEND=NAME`` forces the choice without measuring (tests, or a user who
knows better); ``FLOWERCLF_CACHE`` moves the cache (default ``~/.cache/flowerclf``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from flowerclf.core.errors import FlowerclfError, UsageError
from flowerclf.core.hardware import cpu_description, cpu_features, physical_cores
from flowerclf.core.imaging import list_images, load_rgb
from flowerclf.core.package_format import GALLERY_DIR, ModelPackage
from flowerclf.core.preprocess import preprocess_eval

log = logging.getLogger(__name__)

CACHE_ENV = "FLOWERCLF_CACHE"
FORCE_ENV = "FLOWERCLF_AUTO_BACKEND"
# Bump when the selection rules change: older cached choices are then measured again.
SELECTION_VERSION = 1
# The runtimes auto chooses from, the reference first (PyTorch eager is never the fastest
# on CPU and needs the training stack; TensorRT is for GPUs).
CANDIDATES = ("onnx", "openvino", "onnx_int8", "openvino_int8", "openvino_bf16")
REFERENCE = "onnx"
# Reduced-precision runtimes and the descriptor check that holds their accuracy, measured at
# export on the evaluation split.
REDUCED_CHECKS = {
    "onnx_int8": "int8", "openvino_int8": "openvino_int8", "openvino_bf16": "openvino_bf16",
}  # fmt: skip
# Runtimes that read a model file of their own (the others read model.onnx).
OWN_FILES = ("onnx_int8", "openvino_int8")
ACCURACY_BUDGET_POINTS = 1.0
DEFAULT_PARITY_ATOL = 1e-4
# Batches up to this size run on the latency winner, larger ones on the throughput winner.
LATENCY_BATCH_MAX = 4
# Two runtimes in one process cost more than their figures say: each keeps its own thread
# pool, and the two pools contend (scripts/split_runtime.py, 2-core machine: single images
# between batches on another runtime kept their p50 but had a 1.4-1.6x longer p95). So one
# runtime serves both batch classes unless the other class's winner is more than this much
# better at it.
SINGLE_RUNTIME_SLACK = 0.15
THROUGHPUT_BATCH = 32
PROBE_IMAGES = 8
# Candidates take turns, round by round, and each keeps its best round: a burst of other
# work on the machine then slows one round of one candidate, not the choice.
ROUNDS = 3
LATENCY_SECONDS = 0.1  # per candidate and round, at batch 1


class Runtime(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


Factory = Callable[[ModelPackage, str, "int | None"], Runtime]


@dataclass(frozen=True)
class AutoChoice:
    """What ``auto`` picked, and the measurements it picked from.

    ``candidates`` maps each runtime to its figures (``p50_ms`` at batch 1, ``batch_ips``
    at :data:`THROUGHPUT_BATCH`) or to the reason it was left out (``skipped``).
    """

    latency: str
    throughput: str
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    measured_s: float = 0.0
    from_cache: bool = False
    forced: bool = False

    @property
    def name(self) -> str:
        """One name when both batch classes run on the same runtime, else both."""
        if self.latency == self.throughput:
            return self.latency
        return f"{self.latency} (batch <= {LATENCY_BATCH_MAX}), {self.throughput} (larger)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"name": self.name}


def cache_root() -> Path:
    """``$FLOWERCLF_CACHE``, else ``$XDG_CACHE_HOME/flowerclf``, else ``~/.cache/flowerclf``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flowerclf"


def runtime_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for distribution in ("onnxruntime", "openvino"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = None
    return versions


def choice_key(package: ModelPackage, threads: int) -> str:
    """Names the cached choice: the model files, the CPU, the threads, the runtimes."""
    sha = package.descriptor.get("sha256", {})
    parts = {
        "selection": SELECTION_VERSION,
        "package": [package.name, package.version],
        "models": {k: sha.get(k) for k in ("onnx", *OWN_FILES)},
        "checks": {k: package.descriptor.get("checks", {}).get(k) for k in REDUCED_CHECKS.values()},
        "cpu": cpu_description(),
        "cpu_features": cpu_features(),
        "threads": threads,
        "runtimes": runtime_versions(),
    }
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cache_file(package: ModelPackage, threads: int) -> Path:
    return cache_root() / "backend-choice" / f"{choice_key(package, threads)}.json"


def load_cached(path: Path) -> AutoChoice | None:
    try:
        data = json.loads(path.read_text())
        return AutoChoice(
            latency=str(data["latency"]),
            throughput=str(data["throughput"]),
            candidates=dict(data.get("candidates", {})),
            measured_s=float(data.get("measured_s", 0.0)),
            from_cache=True,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: measure again


def _save(path: Path, choice: AutoChoice) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(choice.to_dict(), indent=2))
        tmp.replace(path)
    except OSError as exc:  # a read-only home must not stop inference
        log.warning("could not cache the backend choice in %s: %s", path.parent, exc)


def budget_reason(package: ModelPackage, name: str) -> str | None:
    """Why the reduced-precision runtime ``name`` may not be chosen (None when it may)."""
    if name in OWN_FILES and package.file(name) is None:
        return "the package has no such model"
    if name == "openvino_bf16" and not (cpu_features()["bf16"] or cpu_features()["amx"]):
        return "this CPU has no bf16 units (AVX512-BF16 or AMX)"
    check = package.descriptor.get("checks", {}).get(REDUCED_CHECKS[name]) or {}
    drop = check.get("accuracy_drop_points")
    if drop is None:
        return "no accuracy measured at export"
    if float(drop) > ACCURACY_BUDGET_POINTS:
        return f"loses {drop} accuracy points (budget {ACCURACY_BUDGET_POINTS})"
    return None


def probe_inputs(package: ModelPackage, count: int = PROBE_IMAGES) -> np.ndarray:
    """Preprocessed gallery thumbnails (real photos), else seeded noise: ``(count, 3, S, S)``."""
    spec = package.spec
    gallery = package.file("gallery") or package.root / GALLERY_DIR
    arrays: list[np.ndarray] = []
    if gallery.is_dir():
        for path in list_images(gallery)[:count]:
            try:
                arrays.append(preprocess_eval(load_rgb(path), spec))
            except FlowerclfError:
                continue
    if not arrays:
        rng = np.random.default_rng(0)
        return rng.standard_normal((count, 3, spec.input_size, spec.input_size), np.float32)
    return np.stack([arrays[i % len(arrays)] for i in range(count)])


def _parity_reason(
    candidate: Runtime, reference_out: np.ndarray, probes: np.ndarray, atol: float
) -> str | None:
    probabilities, _ = candidate.run(probes)
    diff = float(np.abs(probabilities - reference_out).max())
    return None if diff <= atol else f"parity failed: max prob diff {diff:.2e} > {atol:.0e}"


def _call_times(run: Callable[[], object], seconds: float, min_calls: int) -> list[float]:
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < min_calls or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return samples


def measure(
    runtimes: dict[str, Runtime], probes: np.ndarray, rounds: int = ROUNDS
) -> dict[str, dict[str, float]]:
    """Batch-1 p50 (ms) and batch-:data:`THROUGHPUT_BATCH` throughput of each runtime: the
    runtimes take turns round by round; each figure is the runtime's best round (its
    fastest batch, its lowest per-round median latency)."""
    one = probes[:1]
    batch = np.concatenate([probes] * -(-THROUGHPUT_BATCH // len(probes)))[:THROUGHPUT_BATCH]
    for runtime in runtimes.values():  # warm-up: first calls allocate and tune
        runtime.run(one)
        runtime.run(batch)
    latency: dict[str, list[float]] = {n: [] for n in runtimes}
    per_batch: dict[str, list[float]] = {n: [] for n in runtimes}
    for _ in range(rounds):
        for name, runtime in runtimes.items():
            samples = _call_times(lambda r=runtime: r.run(one), LATENCY_SECONDS, 3)
            latency[name].append(statistics.median(samples))
            per_batch[name] += _call_times(lambda r=runtime: r.run(batch), 0.0, 1)
    return {
        name: {
            "p50_ms": round(min(latency[name]) * 1000, 3),
            "batch_ips": round(len(batch) / min(per_batch[name]), 1),
        }
        for name in runtimes
    }


def select(
    package: ModelPackage, factory: Factory, threads: int, candidates: tuple[str, ...] = CANDIDATES
) -> tuple[AutoChoice, dict[str, Runtime]]:
    """Measure the qualifying candidates and pick the fastest per batch class; also return
    the runtimes built on the way (so the winners need not be built twice)."""
    started = time.perf_counter()
    report: dict[str, dict[str, Any]] = {}
    runtimes: dict[str, Runtime] = {}
    probes = probe_inputs(package)
    reference = factory(package, REFERENCE, threads)
    runtimes[REFERENCE] = reference
    reference_out, _ = reference.run(probes)
    atol = float(package.descriptor.get("checks", {}).get("onnx_parity", {}).get("atol")
                 or DEFAULT_PARITY_ATOL)  # fmt: skip
    for name in candidates:
        if name == REFERENCE:
            continue
        reason = budget_reason(package, name) if name in REDUCED_CHECKS else None
        runtime = None
        if reason is None:
            try:
                runtime = factory(package, name, threads)
            except FlowerclfError as exc:  # not installed, or the package lacks the file
                reason = str(exc)
        if runtime is not None and name not in REDUCED_CHECKS:
            reason = _parity_reason(runtime, reference_out, probes, atol)
        if reason is None and runtime is not None:
            runtimes[name] = runtime
        else:
            report[name] = {"skipped": reason}
    figures = measure(runtimes, probes)
    report |= figures
    # Ties go to the earlier candidate (the reference first): no switch for a rounding error.
    order = [n for n in candidates if n in figures]
    latency, throughput = pick_winners(figures, order)
    choice = AutoChoice(latency, throughput, report, round(time.perf_counter() - started, 2))
    return choice, runtimes


def pick_winners(figures: dict[str, dict[str, Any]], order: list[str]) -> tuple[str, str]:
    """(latency runtime, throughput runtime): the fastest of each, or one runtime for both
    when it is within :data:`SINGLE_RUNTIME_SLACK` of the other winner at the other task."""
    latency = min(order, key=lambda n: figures[n]["p50_ms"])
    throughput = max(order, key=lambda n: figures[n]["batch_ips"])
    if latency == throughput:
        return latency, throughput
    best_p50 = figures[latency]["p50_ms"]
    best_ips = figures[throughput]["batch_ips"]
    # The one that gives up less, relative to the other's best, serves both.
    throughput_slower = figures[throughput]["p50_ms"] / best_p50 - 1
    latency_fewer = 1 - figures[latency]["batch_ips"] / best_ips
    if min(throughput_slower, latency_fewer) > SINGLE_RUNTIME_SLACK:
        return latency, throughput
    single = throughput if throughput_slower <= latency_fewer else latency
    return single, single


def resolve(
    package: ModelPackage, factory: Factory, threads: int | None = None, use_cache: bool = True
) -> tuple[AutoChoice, dict[str, Runtime]]:
    """The cached choice for this package and machine, else a fresh measurement (cached),
    and any runtimes built while measuring."""
    threads = threads or physical_cores()
    forced = os.environ.get(FORCE_ENV)
    if forced:
        if forced not in CANDIDATES:
            raise UsageError(f"{FORCE_ENV}={forced!r}; valid: {', '.join(CANDIDATES)}")
        return AutoChoice(forced, forced, forced=True), {}
    path = _cache_file(package, threads)
    cached = load_cached(path) if use_cache else None
    if cached is not None:
        return cached, {}
    choice, runtimes = select(package, factory, threads)
    log.info("backend auto: %s (measured in %.1f s)", choice.name, choice.measured_s)
    _save(path, choice)
    return choice, runtimes


class AutoBackend:
    """Runs small batches on the latency winner and large ones on the throughput winner."""

    def __init__(self, package: ModelPackage, factory: Factory, threads: int | None = None) -> None:
        self.choice, built = resolve(package, factory, threads)

        def runtime(name: str) -> Runtime:
            if name not in built:
                built[name] = factory(package, name, threads)
            return built[name]

        self._latency = runtime(self.choice.latency)
        self._throughput = runtime(self.choice.throughput)
        self.name = self.choice.name

    def _pick(self, batch: np.ndarray) -> Runtime:
        return self._latency if len(batch) <= LATENCY_BATCH_MAX else self._throughput

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._pick(batch).run(batch)

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._pick(batch).run_logits(batch)
