"""One training run's life: open it (run directory, MLflow run), record what it is, and end
it the same way for every model (the majority baseline included).

The end of a run evaluates val and test, saves embeddings when the model has them, writes
``config.yaml``, ``metrics.json``, ``history.csv`` and the evaluation reports into the run
directory, and logs all of it to the MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import MLFlowLogger

from flowerclf.config.schema import FlowerclfConfig, RunConfig, RunRecord
from flowerclf.core.errors import RunStateError
from flowerclf.core.metric_names import LOGGED_METRICS
from flowerclf.data.datamodule import FlowerDataModule, prepared_raw_dir
from flowerclf.data.prepare import resolve_root
from flowerclf.metrics.embeddings import EMBEDDINGS_FILE, knn_accuracy, save_embeddings
from flowerclf.metrics.report import Predictions, write_evaluation
from flowerclf.tracking import (
    flatten,
    hardware_description,
    resolve_tracking_uri,
    run_tags,
    sqlite_store_path,
)
from flowerclf.training.predict import run_history, write_history

EVAL_SPLITS = ("val", "test")


def with_resolved_data_root(cfg: FlowerclfConfig) -> FlowerclfConfig:
    """``cfg`` with ``data.root`` made absolute (the default root filled in), so that the
    run records where its data was, wherever it is read back from."""
    return cfg.updated(data=cfg.data.updated(root=str(resolve_root(cfg.data.root))))


def check_fresh_run_dir(run_dir: Path) -> None:
    # Lightning would write best-v1.ckpt next to an old best.ckpt, and readers of the fixed
    # location would silently get the old model: refuse instead.
    old = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    if old:
        raise RunStateError(
            f"{run_dir} already holds checkpoints ({', '.join(p.name for p in old)}); remove "
            f"{run_dir / 'checkpoints'}, choose another paths.run_dir, or continue the run "
            f"with resume={old[0].parent / 'last.ckpt'}"
        )


@dataclass
class TrainResult:
    """What a training run produced; ``to_json`` is the CLI's ``--json`` line."""

    run_id: str | None
    tracking_uri: str | None
    checkpoint: str
    run_dir: str
    metrics: dict[str, float] = field(default_factory=dict)
    train_time_s: float = 0.0
    hardware: str = field(default_factory=hardware_description)
    reports: dict[str, str] = field(default_factory=dict)
    global_rank: int = 0  # a DDP run's other processes return a result with no run in it

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def other_rank(cls, rank: int, context: RunContext) -> TrainResult:
        """What a process other than rank 0 of a DDP run returns: it trained, nothing more."""
        return cls(
            run_id=None, tracking_uri=context.tracking_uri, checkpoint="", run_dir="",
            train_time_s=round(context.elapsed(), 2),
            global_rank=rank,
        )  # fmt: skip


@dataclass
class RunContext:
    """What every step of a run needs: its config, data, place on disk and MLflow run."""

    config: RunConfig  # what the checkpoint and config.yaml record (as a plain dict)
    datamodule: FlowerDataModule
    run_dir: Path
    logger: MLFlowLogger | None
    tracking_uri: str | None
    started: float = field(default_factory=time.perf_counter)
    rank: int = 0  # global rank in a multi-process (DDP) run; only rank 0 owns the MLflow run

    @property
    def run_id(self) -> str | None:
        if self.logger is None or self.rank != 0:
            return None
        return self.logger.run_id

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def make_logger(
    cfg: FlowerclfConfig, run_id: str | None, rank: int = 0
) -> tuple[MLFlowLogger | None, str | None]:
    """Lightning's MLflow logger on a new run (or on ``run_id``, to continue it).

    On a rank other than 0 of a multi-process run the logger is made but never opened: one
    training is one MLflow run, which rank 0 creates and logs to. (Lightning's callbacks,
    such as the learning-rate monitor, want a logger on every rank; off rank 0 its calls do
    nothing.)
    """
    if not cfg.logger.enabled:
        return None, None
    uri = resolve_tracking_uri(cfg.logger.tracking_uri)
    run_name = cfg.logger.run_name or f"{cfg.data.name}-{cfg.model.name}-{cfg.loss.name}"
    if rank != 0:
        return MLFlowLogger(
            experiment_name=cfg.logger.experiment_name, run_name=run_name, tracking_uri=uri,
            run_id=run_id, log_model=False,
        ), uri  # fmt: skip
    with store_setup_lock(uri):
        logger = MLFlowLogger(
            experiment_name=cfg.logger.experiment_name,
            run_name=run_name,
            tracking_uri=uri,
            run_id=run_id,
            log_model=False,
        )
        _ = logger.experiment  # creates the schema, the experiment and the run now, locked
    return logger, uri


@contextmanager
def store_setup_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock (across processes) on a SQLite store while a run is opened.

    MLflow creates a new SQLite store's tables, and an experiment on first use, without
    locking: two runs starting together on one store race, and one dies ("table ... already
    exists", "UNIQUE constraint failed: experiments.name"). Under this lock the second run
    finds both made. Everything a run writes later is a short transaction that SQLite's
    busy timeout serialises. Other stores (a tracking server, a database server) handle
    concurrency themselves; so does nothing on platforms without ``fcntl`` (Windows).
    """
    database = sqlite_store_path(tracking_uri)
    try:
        import fcntl  # POSIX only
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if database is None or fcntl is None:
        yield
        return
    # In the temporary directory, not next to the database: nothing to clean up or ignore.
    key = hashlib.sha256(str(database).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"flowerclf-mlflow-{key}.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fixed_run_dir(cfg: FlowerclfConfig) -> Path | None:
    """``paths.run_dir`` as an absolute path (a fixed place, e.g. the DVC pipeline's
    ``runs/<recipe>``), or None when each run gets its own directory."""
    return Path(cfg.paths.run_dir).resolve() if cfg.paths.run_dir else None


def run_directory(cfg: FlowerclfConfig, run_id: str | None) -> Path:
    """``paths.run_dir`` when set, else ``<paths.output_dir>/runs/<run id>``."""
    fixed = fixed_run_dir(cfg)
    if fixed is not None:
        return fixed
    output_dir = Path(cfg.paths.output_dir).resolve()
    return output_dir / "runs" / (run_id or time.strftime("local-%Y%m%d-%H%M%S"))


def open_run(
    cfg: FlowerclfConfig,
    datamodule: FlowerDataModule,
    resume_run: str | None = None,
    started: float | None = None,
    rank: int = 0,
) -> RunContext:
    """Start (or continue) the MLflow run, fix the run directory, and record both in the
    run's config (:class:`~flowerclf.config.schema.RunConfig`).

    ``rank``: this process's global rank in a multi-process run. Other ranks than 0 open no
    MLflow run; they take part in fit only (rank 0 checkpoints, evaluates and logs).
    """
    logger, tracking_uri = make_logger(cfg, resume_run, rank)
    run_id = logger.run_id if logger is not None and rank == 0 else resume_run
    run_dir = run_directory(cfg, run_id)
    config = cfg.for_run(RunRecord(id=run_id, dir=str(run_dir), tracking_uri=tracking_uri))
    context = RunContext(config, datamodule, run_dir, logger, tracking_uri, rank=rank)
    if started is not None:
        context.started = started
    return context


def record_start(context: RunContext, **tags: str) -> None:
    """Log the config as parameters and tag the run (data version, model, hardware...)."""
    if context.logger is None or context.run_id is None:
        return
    cfg = context.config
    params = {key: value for key, value in cfg.to_dict().items() if key != "run"}
    context.logger.log_hyperparams(flatten(params))
    all_tags = run_tags(context.datamodule.manifest_sha256, cfg.data.name, cfg.model.name, **tags)
    for key, value in all_tags.items():
        context.logger.experiment.set_tag(context.run_id, key, value)


def _evaluate_splits(
    context: RunContext, predictions: Mapping[str, Predictions], history: Mapping[str, Any]
) -> tuple[dict[str, float], dict[str, str]]:
    datamodule = context.datamodule
    classes = datamodule.classes
    rows_by_id = {row.id: row for row in datamodule.rows}
    raw_dir = prepared_raw_dir(datamodule.prepared_dir)
    train_pred = predictions.get("train_eval")
    metrics: dict[str, float] = {}
    reports: dict[str, str] = {}
    for split in EVAL_SPLITS:
        pred = predictions[split]
        extra: dict[str, Any] = {}
        if train_pred is not None:
            extra["knn_accuracy"] = knn_accuracy(
                pred.embeddings, pred.labels, train_pred.embeddings, train_pred.labels,
                context.config.trainer.knn_k, len(classes),
            )  # fmt: skip
        evaluation = write_evaluation(
            pred, classes, rows_by_id, raw_dir, context.run_dir / "eval" / split, split=split,
            history=history, extra=extra,
        )  # fmt: skip
        for key in LOGGED_METRICS:
            if key in evaluation:
                metrics[f"{split}/{key}"] = float(evaluation[key])
        reports[split] = evaluation["report"]["markdown"]
    return metrics, reports


def _save_embeddings(context: RunContext, predictions: Mapping[str, Predictions]) -> Path:
    all_pred = [predictions[name] for name in ("train_eval", *EVAL_SPLITS)]
    return save_embeddings(
        context.run_dir / EMBEDDINGS_FILE,
        np.concatenate([p.embeddings for p in all_pred]),
        np.concatenate([p.ids for p in all_pred]),
        {row.id: row for row in context.datamodule.rows},
        context.datamodule.classes,
    )


def finish_run(
    context: RunContext,
    predictions: Mapping[str, Predictions],
    model_file: Path,
    step: int = 0,
    extra_metrics: Mapping[str, float] | None = None,
) -> TrainResult:
    """Evaluate, save, and log everything a finished run has; return the result.

    ``predictions`` holds ``val`` and ``test``, plus ``train_eval`` when the model has
    embeddings (then kNN accuracy and ``embeddings.npz`` are made from it). ``model_file``
    is the best checkpoint, or the baseline's JSON model.
    """
    run_dir = context.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    history = run_history(context.logger, context.run_id)
    train_seconds = context.elapsed()
    metrics: dict[str, float] = {"train_time_s": round(train_seconds, 2), **(extra_metrics or {})}
    split_metrics, reports = _evaluate_splits(context, predictions, history)
    metrics.update(split_metrics)
    embeddings = _save_embeddings(context, predictions) if "train_eval" in predictions else None
    (run_dir / "config.yaml").write_text(context.config.to_yaml())
    hardware = hardware_description()
    # The hardware string goes to the file only (MLflow metrics are numbers): with the
    # wall-clock time it is what the results tables (README, docs/results.md) quote for each row.
    (run_dir / "metrics.json").write_text(
        json.dumps({**metrics, "hardware": hardware}, indent=2) + "\n"
    )
    write_history(history, run_dir / "history.csv")
    _log_outputs(context, metrics, model_file, embeddings, step)
    return TrainResult(
        run_id=context.run_id,
        tracking_uri=context.tracking_uri,
        checkpoint=str(model_file),
        run_dir=str(run_dir),
        metrics=metrics,
        train_time_s=round(train_seconds, 2),
        hardware=hardware,
        reports=reports,
    )


def end_run_without_trainer(context: RunContext) -> None:
    """Mark the MLflow run finished where no Lightning trainer ends it (the majority
    baseline, an ensemble combined from its members)."""
    if context.logger is not None:
        context.logger.finalize("success")


def _log_outputs(
    context: RunContext,
    metrics: Mapping[str, float],
    model_file: Path,
    embeddings: Path | None,
    step: int,
) -> None:
    if context.logger is None or context.run_id is None:
        return
    client, run_id, run_dir = context.logger.experiment, context.run_id, context.run_dir
    for key, value in metrics.items():
        client.log_metric(run_id, key, value, step=step)
    client.log_artifacts(run_id, str(run_dir / "eval"), "eval")
    if embeddings is not None:
        client.log_artifact(run_id, str(embeddings))
    client.log_artifact(run_id, str(run_dir / "config.yaml"))
    if model_file.suffix == ".ckpt":
        # `evaluate` / `export` find a run's network through this tag or these artifacts.
        client.log_artifact(run_id, str(model_file), "checkpoints")
        client.set_tag(run_id, "flowerclf.checkpoint", str(model_file))
    else:
        client.log_artifact(run_id, str(model_file))
    client.set_tag(run_id, "flowerclf.run_dir", str(run_dir))
