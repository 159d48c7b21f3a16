"""What machine this is: named with every figure flowerclf prints or records."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_description() -> str:
    """``"CPU: <model> x<cores>"`` (no torch import: cheap enough for benchmarks)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} x{os.cpu_count()}"


def physical_cores() -> int:
    """Cores to give one inference session: hyper-threads slow convolutions down."""
    try:
        import psutil  # optional: without it, every logical CPU counts
    except ImportError:
        return max(1, os.cpu_count() or 1)
    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
