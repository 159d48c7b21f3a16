"""``flowerclf evaluate <run id | checkpoint> [split=test]``."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowerclf.core.errors import UsageError
from flowerclf.core.metric_names import LOGGED_METRICS, REPORT_METRICS
from flowerclf.core.open_set import softmax
from flowerclf.data.datamodule import prepared_raw_dir
from flowerclf.metrics.calibration import fit_temperature, logits_from_probabilities
from flowerclf.metrics.classification import expected_calibration_error
from flowerclf.metrics.embeddings import EMBEDDINGS_FILE, knn_accuracy
from flowerclf.metrics.plots import plot_reliability
from flowerclf.metrics.report import Predictions, write_evaluation
from flowerclf.runs import load_trained, run_datamodule
from flowerclf.tracking import existing_run_logger
from flowerclf.training.predict import image_runner, predict_loader, run_history

log = logging.getLogger(__name__)

OPTION_TYPES = {
    "split": str, "data.root": str, "batch_size": int, "num_workers": int, "out": str,
    "metrics": str,
}  # fmt: skip
SPLITS = ("train", "val", "test")


def parse_evaluate_options(options: Sequence[str]) -> dict[str, Any]:
    """``["split=val", "batch_size=64"]`` -> keyword arguments of :func:`evaluate`."""
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in OPTION_TYPES:
            close = difflib.get_close_matches(key, list(OPTION_TYPES), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(
                f"unknown evaluate option {option!r}.{hint} Valid: "
                + ", ".join(f"{k}=<{t.__name__}>" for k, t in OPTION_TYPES.items())
            )
        try:
            parsed[key.replace(".", "_")] = OPTION_TYPES[key](value)
        except ValueError:
            raise UsageError(f"{key} must be {OPTION_TYPES[key].__name__}, got {value!r}") from None
    if parsed.get("split", "test") not in SPLITS:
        raise UsageError(f"split must be one of {list(SPLITS)}, got {parsed['split']!r}")
    return parsed


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
    trained = load_trained(target)
    module, checkpoint, run_id, config = (
        trained.module,
        trained.checkpoint,
        trained.run_id,
        trained.settings,
    )
    datamodule = run_datamodule(config, module.spec, data_root, batch_size, num_workers)
    if datamodule.classes != module.classes:
        raise UsageError(
            f"the dataset at {datamodule.prepared_dir} has classes {datamodule.classes[:5]}..., "
            f"the model was trained on {module.classes[:5]}...: not the same dataset"
        )
    loader_name = "train_eval" if split == "train" else split
    runner = image_runner(module.net, module.spec)
    with torch.inference_mode():
        predictions = predict_loader(runner, datamodule.loader(loader_name), split)
    extra: dict[str, Any] = {"checkpoint": str(checkpoint), "run_id": run_id}
    # Open world (issue 13): score what the package ships, the temperature-scaled
    # probabilities (T fitted on val, as at export); the raw figure stays beside it.
    evaluated_val = predictions if split == "val" else None
    predictions, calibration = _calibrated(
        predictions, lambda: _val(runner, datamodule, evaluated_val)
    )
    uncalibrated_table = calibration.pop("_table")
    extra |= calibration
    run_dir = Path(config.run.dir or checkpoint.parent.parent)
    if not run_dir.is_dir():
        # A run directory that moved with its checkpoint (a DVC pipeline in another clone):
        # the checkpoint still sits in <run dir>/checkpoints/.
        run_dir = checkpoint.parent.parent
    embeddings_file = run_dir / EMBEDDINGS_FILE
    if embeddings_file.is_file() and split != "train":
        saved = np.load(embeddings_file)
        train_mask = np.isin(saved["ids"], [r.id for r in datamodule.training_rows()])
        extra["knn_accuracy"] = knn_accuracy(
            predictions.embeddings, predictions.labels, saved["embeddings"][train_mask],
            saved["labels"][train_mask], config.trainer.knn_k,
            len(module.classes),
        )  # fmt: skip
    logger = None
    if run_id:
        logger = existing_run_logger(run_id, config.run.tracking_uri)
        if logger is None:
            run_id = None
    out_dir = Path(out) if out else run_dir / "evaluate" / split
    out_dir.mkdir(parents=True, exist_ok=True)
    extra["plots_uncalibrated"] = {"reliability": str(plot_reliability(
        uncalibrated_table, extra["ece_uncalibrated"], out_dir / "reliability_uncalibrated.png"
    ))}  # fmt: skip
    report = write_evaluation(
        predictions, module.classes, {r.id: r for r in datamodule.rows},
        prepared_raw_dir(datamodule.prepared_dir), out_dir, split=split,
        history=run_history(logger, run_id) if logger else None, extra=extra,
    )  # fmt: skip
    if logger is not None and run_id is not None:
        client = logger.experiment
        for key in LOGGED_METRICS:
            if key in report:
                client.log_metric(run_id, f"evaluate/{split}/{key}", float(report[key]))
        client.log_artifacts(run_id, str(out_dir), f"evaluate/{split}")
    report.pop("confusion_matrix", None)
    if metrics:
        scalars = {key: report[key] for key in REPORT_METRICS if key in report}
        Path(metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics).write_text(json.dumps(scalars, indent=2) + "\n", encoding="utf-8")
    return report


def _val(
    runner: Any, datamodule: Any, evaluated_val: Predictions | None = None
) -> Predictions | None:
    """Outputs on the images calibration is fitted on, as export fits it: the validation
    split (``evaluated_val`` when the evaluated split is it), or the held-out share of a
    trained one; None when every val image trained (export then ships T = 1, see
    :data:`flowerclf.export.open_world.TRAINED_VALIDATION`)."""
    if not datamodule.calibration_is_held_out:
        return None
    trained_val = "val" in datamodule.train_splits
    if evaluated_val is not None and not trained_val:
        return evaluated_val
    name = "calibration" if trained_val else "val"
    with torch.inference_mode():
        return predict_loader(runner, datamodule.loader(name), f"{name} (calibration)")


def _calibrated(
    predictions: Predictions, validation: Callable[[], Predictions | None]
) -> tuple[Predictions, dict[str, Any]]:
    """Temperature-scale ``predictions`` with T fitted on the val split.

    Returns:
        The calibrated predictions and ``temperature``, ``ece_uncalibrated``,
        ``cross_entropy_uncalibrated`` (plus the uncalibrated reliability table under
        ``_table``); T = 1 without a val split or when every val image was trained on.
    """
    ece_raw, table = expected_calibration_error(predictions.probabilities, predictions.labels)
    # The network's own cross-entropy, comparable with what training logged per split.
    picked = predictions.probabilities[np.arange(len(predictions.labels)), predictions.labels]
    cross_entropy_raw = float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
    val = validation()
    if val is None or len(val.labels) == 0:
        temperature = 1.0
    else:
        temperature = fit_temperature(logits_from_probabilities(val.probabilities), val.labels)
    logits = logits_from_probabilities(predictions.probabilities)
    calibrated = dataclasses.replace(predictions, probabilities=softmax(logits, temperature))
    info = {
        "temperature": temperature, "ece_uncalibrated": ece_raw,
        "cross_entropy_uncalibrated": cross_entropy_raw, "_table": table,
    }  # fmt: skip
    return calibrated, info
