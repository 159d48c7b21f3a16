"""MLflow helpers: where the store is, what a run records."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_DB = "mlflow.db"
PARAM_VALUE_LIMIT = 6000


def resolve_tracking_uri(configured: str | None) -> str:
    """``logger.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in the CWD."""
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:PARAM_VALUE_LIMIT]
    return flat


def git_commit(directory: Path | None = None) -> str | None:
    """The commit of the working directory's git repository (suffix ``-dirty`` if modified)."""
    try:
        cwd = str(directory or Path.cwd())
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def hardware_description() -> str:
    """``"CPU: <model> x<cores>"`` or the GPU name; recorded with every result."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return cpu_description()


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


def run_tags(manifest_sha256: str, dataset: str, model: str, **extra: str) -> dict[str, str]:
    """The tags every flowerclf run carries: data version, model, hardware, git commit."""
    tags = {
        "flowerclf.manifest_sha256": manifest_sha256,
        "flowerclf.dataset": dataset,
        "flowerclf.model": model,
        **{f"flowerclf.{key}": value for key, value in extra.items()},
        "flowerclf.hardware": hardware_description(),
        "mlflow.source.git.commit": git_commit() or "unknown",
    }
    return tags
