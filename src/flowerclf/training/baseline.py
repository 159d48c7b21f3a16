"""The majority-class baseline, evaluated and tracked exactly like a trained model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from flowerclf.data.datamodule import FlowerDataModule, prepared_raw_dir
from flowerclf.evaluation.report import Predictions, write_evaluation
from flowerclf.training.tracking import flatten, run_tags


def train_majority(
    cfg: DictConfig,
    config: dict[str, Any],
    datamodule: FlowerDataModule,
    output_dir: Path,
    started: float,
) -> Any:
    """ "Train" (count the classes), evaluate on val and test, log to MLflow when enabled.

    The predicted distribution is the training class prior, so cross-entropy is finite and
    the predicted class is always the most frequent training class.
    """
    from flowerclf.training.train import (
        SUMMARY_METRICS,
        TrainResult,
        _make_logger,
        run_directory,
    )

    classes = datamodule.classes
    train_labels = np.asarray(
        [r.label for r in datamodule.rows if r.split in datamodule.train_splits], dtype=np.int64
    )
    prior = np.bincount(train_labels, minlength=len(classes)).astype(np.float64)
    prior /= prior.sum()
    logger, tracking_uri = _make_logger(cfg, None)
    run_id = logger.run_id if logger is not None else None
    run_dir = run_directory(cfg, output_dir, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_path = run_dir / "majority.json"
    model_path.write_text(
        json.dumps(
            {"classes": classes, "prior": prior.tolist(), "predicts": classes[int(prior.argmax())]},
            indent=2,
        )
    )
    rows_by_id = {r.id: r for r in datamodule.rows}
    metrics: dict[str, float] = {}
    reports: dict[str, str] = {}
    for split in ("val", "test"):
        rows = datamodule.split_rows(split)
        predictions = Predictions(
            probabilities=np.tile(prior, (len(rows), 1)),
            embeddings=np.zeros((len(rows), 1), dtype=np.float32),
            labels=np.asarray([r.label for r in rows], dtype=np.int64),
            ids=np.asarray([r.id for r in rows], dtype=np.int64),
        )
        evaluation = write_evaluation(
            predictions, classes, rows_by_id, prepared_raw_dir(datamodule.prepared_dir),
            run_dir / "eval" / split, split=split,
        )  # fmt: skip
        for key in SUMMARY_METRICS:
            if key in evaluation:
                metrics[f"{split}/{key}"] = float(evaluation[key])
        reports[split] = evaluation["report"]["markdown"]
    seconds = time.perf_counter() - started
    metrics["train_time_s"] = round(seconds, 2)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if logger is not None and run_id is not None:
        logger.log_hyperparams(flatten(config))
        client = logger.experiment
        for key, value in run_tags(datamodule.manifest_sha256, cfg.data.name, "majority").items():
            client.set_tag(run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.log_artifacts(run_id, str(run_dir / "eval"), "eval")
        client.log_artifact(run_id, str(model_path))
        logger.finalize("success")
    return TrainResult(
        run_id=run_id,
        tracking_uri=tracking_uri,
        checkpoint=str(model_path),
        run_dir=str(run_dir),
        metrics=metrics,
        train_time_s=round(seconds, 2),
        reports=reports,
    )
