"""MLflow helpers: where the store is, what a run records, where a run's checkpoint is, and
how a checkpoint is read (as plain data only: one fetched from a store must not run code)."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowerclf.core.errors import RunNotFoundError, UnsafeCheckpointError
from flowerclf.core.hardware import cpu_description

log = logging.getLogger(__name__)

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


def sqlite_store_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (resolved), else None."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return Path(tracking_uri.removeprefix(prefix).split("?", 1)[0]).expanduser().resolve()


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


def resolve_checkpoint(target: str) -> tuple[Path, str | None]:
    """A checkpoint path, or the best checkpoint of MLflow run ``target``; also the run id."""
    path = Path(target)
    if path.suffix == ".ckpt" or path.exists():
        if not path.is_file():
            raise RunNotFoundError(f"checkpoint {path} does not exist")
        return path, None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(None)
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(target)
    except MlflowException:
        raise RunNotFoundError(
            f"{target!r} is neither a checkpoint file nor a run id in the MLflow store {uri} "
            f"(set MLFLOW_TRACKING_URI to the store the run was logged to)"
        ) from None
    local = run.data.tags.get("flowerclf.checkpoint")
    if local and Path(local).is_file():
        return Path(local), target
    artifacts = [a.path for a in client.list_artifacts(target, "checkpoints")]
    if not artifacts:
        raise RunNotFoundError(f"run {target} has no checkpoint (a majority baseline run?)")
    directory = Path(tempfile.mkdtemp(prefix="flowerclf-ckpt-"))
    downloaded = client.download_artifacts(target, artifacts[0], str(directory))
    return Path(downloaded), target


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (tensors on CPU), unpickled with ``weights_only=True``.

    flowerclf's checkpoints hold only tensors and plain data (the hyper-parameters are the
    resolved config as a plain dict), so nothing needs allow-listing. Anything else (a class
    instance, a function reference) could run code while unpickling and is refused.

    Raises:
        UnsafeCheckpointError: the file holds more than tensors and plain data.
    """
    import torch

    try:
        loaded: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise unsafe_checkpoint_error(path, exc) from None
    return loaded


def unsafe_checkpoint_error(path: str | Path, exc: Exception) -> UnsafeCheckpointError:
    """The one-line error for a checkpoint that ``weights_only=True`` refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # torch explains at length; the line naming the refused object is the useful one.
    reason = next((line for line in lines if "global" in line.lower()), lines[0] if lines else "")
    reason = reason.split(" Please use")[0]
    return UnsafeCheckpointError(
        f"{path} holds more than tensors and plain data, so it was not loaded (unpickling it "
        f"could run code; only load checkpoints written by flowerclf): {reason}"
    )


def existing_run_logger(run_id: str, tracking_uri: str | None) -> Any:
    """An MLFlowLogger on run ``run_id``, or None when its store does not hold that run
    (a checkpoint pulled with DVC into another clone, whose mlflow.db never saw it)."""
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or resolve_tracking_uri(None)
    try:
        MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException:
        log.warning(
            "run %s is not in the MLflow store %s: results are not logged to it", run_id, uri
        )
        return None
    return MLFlowLogger(tracking_uri=uri, run_id=run_id)
