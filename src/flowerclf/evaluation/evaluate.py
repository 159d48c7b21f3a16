"""``flowerclf evaluate <run id | checkpoint> [split=test]``."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

OPTION_TYPES = {
    "split": str, "data.root": str, "batch_size": int, "num_workers": int, "out": str,
    "metrics": str,
}  # fmt: skip
# The scalar results; ``metrics=FILE`` writes just these (a compact DVC metrics file).
SCALAR_KEYS = (
    "num_samples", "accuracy", "top5_accuracy", "macro_f1", "weighted_f1", "macro_precision",
    "macro_recall", "cross_entropy", "ece", "knn_accuracy",
)  # fmt: skip
SPLITS = ("train", "val", "test")


def parse_evaluate_options(options: Sequence[str]) -> dict[str, Any]:
    """``["split=val", "batch_size=64"]`` -> keyword arguments of :func:`evaluate`."""
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in OPTION_TYPES:
            import difflib

            close = difflib.get_close_matches(key, list(OPTION_TYPES), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown evaluate option {option!r}.{hint} Valid: "
                + ", ".join(f"{k}=<{t.__name__}>" for k, t in OPTION_TYPES.items())
            )
        try:
            parsed[key.replace(".", "_")] = OPTION_TYPES[key](value)
        except ValueError:
            raise ValueError(f"{key} must be {OPTION_TYPES[key].__name__}, got {value!r}") from None
    if parsed.get("split", "test") not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {parsed['split']!r}")
    return parsed


def resolve_checkpoint(target: str) -> tuple[Path, str | None]:
    """A checkpoint path, or the best checkpoint of MLflow run ``target``; also the run id."""
    path = Path(target)
    if path.suffix == ".ckpt" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return path, None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from flowerclf.training.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(None)
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(target)
    except MlflowException:
        raise FileNotFoundError(
            f"{target!r} is neither a checkpoint file nor a run id in the MLflow store {uri} "
            f"(set MLFLOW_TRACKING_URI to the store the run was logged to)"
        ) from None
    local = run.data.tags.get("flowerclf.checkpoint")
    if local and Path(local).is_file():
        return Path(local), target
    artifacts = [a.path for a in client.list_artifacts(target, "checkpoints")]
    if not artifacts:
        raise FileNotFoundError(f"run {target} has no checkpoint (a majority baseline run?)")
    directory = Path(tempfile.mkdtemp(prefix="flowerclf-ckpt-"))
    downloaded = client.download_artifacts(target, artifacts[0], str(directory))
    return Path(downloaded), target


@dataclass
class TrainedRun:
    """A trained model loaded from a checkpoint, with the run it came from."""

    module: Any  # FlowerClassifier
    checkpoint: Path
    run_id: str | None

    @property
    def config(self) -> dict[str, Any]:
        return self.module.config


def load_trained(target: str) -> TrainedRun:
    """Run id or checkpoint -> the trained module (on CPU) and its run id."""
    from flowerclf.training.module import FlowerClassifier

    checkpoint, run_id = resolve_checkpoint(target)
    module = FlowerClassifier.load_from_checkpoint(
        checkpoint, map_location="cpu", pretrained=False, input_mode="image", weights_only=False
    )
    return TrainedRun(module, Path(checkpoint), run_id or module.config.get("run", {}).get("id"))


def run_datamodule(
    config: dict[str, Any],
    spec: Any,
    data_root: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> Any:
    """The prepared dataset a run was trained on (``data_root`` if it moved), set up."""
    from flowerclf.data.datamodule import FlowerDataModule

    data_cfg = config["data"]
    prepared = Path(data_root or data_cfg["root"]).expanduser() / data_cfg["name"]
    if not (prepared / "manifest.csv").is_file():
        raise FileNotFoundError(
            f"the run's prepared dataset is not at {prepared} (no manifest.csv): pass "
            f"data.root=<dir holding {data_cfg['name']}/>, or prepare it with the run's data "
            f"settings and seed"
        )
    datamodule = FlowerDataModule(
        prepared,
        spec,
        batch_size=batch_size or int(data_cfg["batch_size"]),
        num_workers=int(data_cfg["num_workers"]) if num_workers is None else num_workers,
        seed=int(config["seed"]),
        train_splits=tuple(config["trainer"].get("train_splits", ["train"])),
    )
    datamodule.setup()
    return datamodule


def evaluate(
    target: str,
    split: str = "test",
    data_root: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    out: str | None = None,
    metrics: str | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model on ``split``; write reports and PNGs; log them to its run.

    ``metrics``, when given, is a file that receives only the scalar results (accuracy,
    F1, cross-entropy, ECE, kNN accuracy, sample count) as flat JSON.

    Returns:
        Metrics (accuracy, macro/weighted F1, cross-entropy, ECE, per-class...) plus the
        paths of the report and plots.
    """
    import torch

    from flowerclf.data.datamodule import prepared_raw_dir
    from flowerclf.evaluation.embeddings import EMBEDDINGS_FILE, knn_accuracy
    from flowerclf.evaluation.report import write_evaluation
    from flowerclf.training.train import _history, image_runner, predict_loader

    trained = load_trained(target)
    module, checkpoint, run_id, config = (
        trained.module,
        trained.checkpoint,
        trained.run_id,
        trained.config,
    )
    datamodule = run_datamodule(config, module.spec, data_root, batch_size, num_workers)
    if datamodule.classes != module.classes:
        raise ValueError(
            f"the dataset at {datamodule.prepared_dir} has classes {datamodule.classes[:5]}..., "
            f"the model was trained on {module.classes[:5]}...: not the same dataset"
        )
    loader_name = "train_eval" if split == "train" else split
    with torch.inference_mode():
        predictions = predict_loader(
            image_runner(module.net, module.spec), datamodule.loader(loader_name), split
        )
    extra: dict[str, Any] = {"checkpoint": str(checkpoint), "run_id": run_id}
    run_dir = Path(config.get("run", {}).get("dir") or checkpoint.parent.parent)
    if not run_dir.is_dir():
        # A run directory that moved with its checkpoint (a DVC pipeline in another clone):
        # the checkpoint still sits in <run dir>/checkpoints/.
        run_dir = checkpoint.parent.parent
    embeddings_file = run_dir / EMBEDDINGS_FILE
    if embeddings_file.is_file() and split != "train":
        saved = np.load(embeddings_file)
        train_mask = np.isin(saved["splits"], list(datamodule.train_splits))
        extra["knn_accuracy"] = knn_accuracy(
            predictions.embeddings, predictions.labels, saved["embeddings"][train_mask],
            saved["labels"][train_mask], int(config["trainer"].get("knn_k", 5)),
            len(module.classes),
        )  # fmt: skip
    logger = None
    if run_id:
        logger = _run_logger(run_id, config.get("run", {}).get("tracking_uri"))
        if logger is None:
            run_id = None
    out_dir = Path(out) if out else run_dir / "evaluate" / split
    report = write_evaluation(
        predictions, module.classes, {r.id: r for r in datamodule.rows},
        prepared_raw_dir(datamodule.prepared_dir), out_dir, split=split,
        history=_history(logger, run_id) if logger else None, extra=extra,
    )  # fmt: skip
    if logger is not None and run_id is not None:
        client = logger.experiment
        for key in ("accuracy", "macro_f1", "weighted_f1", "cross_entropy", "ece",
                    "top5_accuracy", "knn_accuracy"):  # fmt: skip
            if key in report:
                client.log_metric(run_id, f"evaluate/{split}/{key}", float(report[key]))
        client.log_artifacts(run_id, str(out_dir), f"evaluate/{split}")
    report.pop("confusion_matrix", None)
    if metrics:
        import json

        scalars = {key: report[key] for key in SCALAR_KEYS if key in report}
        Path(metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics).write_text(json.dumps(scalars, indent=2) + "\n", encoding="utf-8")
    return report


def _run_logger(run_id: str, tracking_uri: str | None) -> Any:
    """An MLFlowLogger on run ``run_id``, or None when its store does not hold that run
    (a checkpoint pulled with DVC into another clone, whose mlflow.db never saw it)."""
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from flowerclf.training.tracking import resolve_tracking_uri

    uri = tracking_uri or resolve_tracking_uri(None)
    try:
        MlflowClient(tracking_uri=uri).get_run(run_id)
    except MlflowException:
        log.warning(
            "run %s is not in the MLflow store %s: results are not logged to it", run_id, uri
        )
        return None
    return MLFlowLogger(tracking_uri=uri, run_id=run_id)
