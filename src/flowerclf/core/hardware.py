"""What machine this is: named with every figure flowerclf prints or records."""

from __future__ import annotations

import os
import platform
import threading
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any


def cpu_description(cpuinfo: str | None = None) -> str:
    """``"CPU: <model> x<cores> (<features>)"``, e.g. ``"CPU: AMD EPYC x2 (avx2, avx512)"``
    (no torch import: cheap enough for benchmarks). The instruction-set features are part
    of it because one model name covers machines twice as fast as each other (AVX2 against
    AVX-512 generations of EPYC): a figure names the one it was measured on."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    cpu = platform.processor() or platform.machine()
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    features = [name for name, present in cpu_features(cpuinfo).items() if present]
    suffix = f" ({', '.join(features)})" if features else ""
    return f"CPU: {cpu} x{os.cpu_count()}{suffix}"


def physical_cores() -> int:
    """Cores to give one inference session: hyper-threads slow convolutions down."""
    try:
        import psutil  # optional: without it, every logical CPU counts
    except ImportError:
        return max(1, os.cpu_count() or 1)
    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


# The instruction-set extensions that decide which runtime and precision is fastest, and
# the /proc/cpuinfo flags that announce them (any one of a feature's flags is enough).
CPU_FEATURE_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    # int8 dot products: without them int8 convolutions gain little over fp32.
    "vnni": ("avx512_vnni", "avx_vnni"),
    "bf16": ("avx512_bf16", "amx_bf16"),
    "amx": ("amx_tile",),
}


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The first processor's ``flags`` in ``/proc/cpuinfo`` (empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_features(cpuinfo: str | None = None) -> dict[str, bool]:
    """Which of :data:`CPU_FEATURE_FLAGS` this CPU has (all False where flags are unknown)."""
    flags = cpu_flags(cpuinfo)
    return {name: any(f in flags for f in wanted) for name, wanted in CPU_FEATURE_FLAGS.items()}


# Decoding threads beyond this buy nothing on the machines flowerclf runs on, and each holds
# a decoded image.
MAX_DECODE_THREADS = 8


def decode_threads() -> int:
    """Threads that decode and preprocess images of a batch: one per CPU, at most
    :data:`MAX_DECODE_THREADS` (Pillow's decoders and resizes release the GIL)."""
    return max(1, min(os.cpu_count() or 1, MAX_DECODE_THREADS))


@cache
def _blas_controller() -> Any:
    """threadpoolctl's controller, made on first use (it inspects the libraries loaded into
    the process); None without threadpoolctl, where the BLAS guard then does nothing."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # a base dependency, but the code may travel without it (pyfunc)
        return None
    return ThreadpoolController()


class SingleThreadedBlas:
    """Context manager: NumPy's BLAS runs on the calling thread only while inside it.

    OpenBLAS's worker threads keep spinning for a while after each matrix product, waiting
    for the next one. After the open-set kNN product (a batch against the training
    embeddings: well under a millisecond on one core) they kept both cores of the 2-core
    dev machine busy while the next batch ran in OpenVINO: batch-32 inference plus scores
    ran at 266-285 instead of 529 images/s (scripts/blas_threads_check.py). So the small
    products beside a model run take one thread.

    BLAS thread counts are process-wide, so nested and concurrent users (the service's
    threads) share one limit: the first to enter sets it, the last to leave restores the
    original count.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0 and (controller := _blas_controller()) is not None:
                self._limiter = controller.limit(limits=1, user_api="blas")
            self._users += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


# The one instance everything in this process shares (see SingleThreadedBlas).
single_threaded_blas = SingleThreadedBlas()
