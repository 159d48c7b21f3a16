"""Export step: fit calibration and unknown-image rejection, write what the runtime reads.

One function, :func:`fit_open_world`, takes the network's outputs on the validation split
and the training embeddings, and returns the files it wrote into the package plus the
``open_world`` descriptor section (read back by :mod:`flowerclf.core.open_set`):

- ``temperature``: minimises the validation NLL; ECE (15 bins) before and after;
- ``reject.thresholds``: per method, the validation score that keeps ``reject.keep`` of
  the known images, so any method can be chosen at load time;
- ``reject.method``: the default method, from the OOD evaluation's measured AUROC
  (``flowerclf evaluate <package> --ood``), see
  :data:`flowerclf.export.options.DEFAULT_METHOD`;
- ``open_set.npz``: kNN bank, class means and shared precision of the embeddings, and the
  validation split's sorted MSP and kNN scores (for ``msp_knn``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowerclf.core.open_set import (
    METHODS,
    OPEN_SET_FILE,
    OPEN_SET_FILE_KEY,
    softmax,
    unknown_scores,
)
from flowerclf.core.package_format import EMBEDDINGS_FILE
from flowerclf.export.context import IMAGE_CHUNK, ExportContext, StepResult
from flowerclf.export.dataset_images import iter_preprocessed
from flowerclf.export.onnx_model import cpu_session, run_in_batches
from flowerclf.export.options import OpenWorldOptions
from flowerclf.metrics.calibration import calibration_summary, fit_temperature
from flowerclf.metrics.classification import expected_calibration_error
from flowerclf.metrics.open_set import fit_stats, fit_threshold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitOutputs:
    """The network's outputs on one split: logits ``(N, C)``, embeddings ``(N, D)``, labels."""

    logits: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray


def fit_open_world(
    out_dir: Path,
    validation: SplitOutputs,
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    classes: Sequence[str],
    options: OpenWorldOptions | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Fit temperature, statistics and thresholds; write ``open_set.npz`` into ``out_dir``.

    ``validation`` must be images the model did not train on (see
    :func:`write_open_world`).

    Returns:
        ``({"open_set": "open_set.npz"}, descriptor section)``; with an empty validation
        split, ``({}, section without rejection)``: the package still works, uncalibrated.

    Raises:
        ValueError: a class has no training embedding.
    """
    options = options or OpenWorldOptions()
    if len(validation.logits) == 0:
        return uncalibrated(NO_VALIDATION)
    temperature = fit_temperature(validation.logits, validation.labels)
    calibration = calibration_summary(validation.logits, validation.labels, temperature)
    stats = fit_stats(train_embeddings, train_labels, len(classes), k=options.knn_k)
    # msp_knn ranks a score among the known validation images' scores: store those.
    stats = stats.with_references(
        unknown_scores("msp", validation.logits, validation.embeddings, temperature, stats),
        unknown_scores("knn", validation.logits, validation.embeddings, temperature, stats),
    )
    stats.save(out_dir / OPEN_SET_FILE)
    thresholds = {}
    for method in METHODS:
        scores = unknown_scores(
            method, validation.logits, validation.embeddings, temperature, stats
        )
        thresholds[method] = fit_threshold(scores, options.keep)
    log.info(
        "temperature %.3f (val ECE %.4f -> %.4f); rejection %s at %.4g keeps %.0f%% of val",
        temperature, calibration["ece_uncalibrated"], calibration["ece"], options.method,
        thresholds[options.method], 100 * options.keep,
    )  # fmt: skip
    section = {
        "temperature": temperature,
        "calibration": calibration | {"split": "val", "count": len(validation.labels)},
        "reject": {
            "method": options.method,
            "keep": options.keep,
            "thresholds": thresholds,
            "knn_k": options.knn_k,
            "split": "val",
        },
    }
    return {OPEN_SET_FILE_KEY: OPEN_SET_FILE}, section


NO_VALIDATION = "the dataset has no validation split to fit calibration and rejection on"
# A model is surest of the images it trained on: a temperature fitted on them comes out
# far too sharp and a threshold that keeps 95 % of them keeps almost nothing else
# (oxford102_best, 7 augmented views of every val image: T = 0.018, 0 of 6,145 test images
# called known).
TRAINED_VALIDATION = (
    "every validation image was trained on (trainer.train_splits includes val without "
    "trainer.calibration_holdout), and a temperature or threshold fitted on trained images "
    "rejects nearly every new one; train with trainer.calibration_holdout=0.2 to keep a "
    "share of val out for them"
)


def uncalibrated(reason: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The section of a package without calibration or rejection (T = 1, every image
    known), saying why."""
    log.warning("%s: the package ships uncalibrated, without rejection", reason)
    return {}, {"temperature": 1.0, "reject": {}, "reason": reason}


def averaged_views_nll(
    logits: np.ndarray, mirrored: np.ndarray, labels: np.ndarray, temperature: float
) -> float:
    """Mean NLL of ``labels`` under the two views' averaged ``softmax(logits / T)`` (what
    ``Classifier(tta=True)`` serves)."""
    probabilities = (softmax(logits, temperature) + softmax(mirrored, temperature)) / 2
    picked = probabilities[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def fit_tta_calibration(
    logits: np.ndarray, mirrored: np.ndarray, labels: np.ndarray, temperature: float
) -> dict[str, float]:
    """The temperature of test-time augmentation, fitted like the package's: on the
    validation split, for the averaged probabilities of each image and its mirror image.

    Averaging two calibrated views makes answers less confident than they are right (the
    views agree more often than independent guesses would), so the single-view temperature
    under-states TTA's confidence; this one is fitted for the average itself.
    """
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda log_t: averaged_views_nll(logits, mirrored, labels, float(np.exp(log_t))),
        bounds=(-4.0, 4.0), method="bounded", options={"xatol": 1e-4},
    )  # fmt: skip
    tta_temperature = float(np.exp(found.x))

    def ece(t: float) -> float:
        averaged = (softmax(logits, t) + softmax(mirrored, t)) / 2
        return float(expected_calibration_error(averaged, labels)[0])

    return {
        "temperature": tta_temperature,
        "ece_with_single_view_temperature": ece(temperature),
        "ece": ece(tta_temperature),
        "nll_with_single_view_temperature": averaged_views_nll(
            logits, mirrored, labels, temperature
        ),
        "nll": averaged_views_nll(logits, mirrored, labels, tta_temperature),
    }


def write_open_world(context: ExportContext) -> StepResult:
    """Export step: the ONNX model's validation logits/embeddings and the training
    embeddings (written by the ``embeddings`` step) -> :func:`fit_open_world`."""
    # Images the model did not train on: the validation split, or its held-out share when
    # validation was trained on (trainer.calibration_holdout); without them, nothing fits.
    if not context.datamodule.calibration_is_held_out:
        return StepResult(entries={"open_world": uncalibrated(TRAINED_VALIDATION)[1]})
    val_rows = context.datamodule.calibration_rows()
    session = cpu_session(context.onnx_path)
    chunks = iter_preprocessed(
        val_rows, context.raw_dir, context.spec, "val (calibration, rejection)", IMAGE_CHUNK
    )
    outputs, mirrored = [], []
    for images in chunks:
        outputs.append(run_in_batches(session, images, ["logits", "embeddings"]))
        # The mirror view, for the temperature of test-time augmentation.
        flipped = np.ascontiguousarray(images[..., ::-1])
        mirrored.append(run_in_batches(session, flipped, ["logits"])[0])
    num_classes, dim = len(context.classes), context.embedding_dim
    validation = SplitOutputs(
        np.concatenate([o[0] for o in outputs]) if outputs else np.zeros((0, num_classes)),
        np.concatenate([o[1] for o in outputs]) if outputs else np.zeros((0, dim)),
        np.asarray([r.label for r in val_rows], dtype=np.int64),
    )
    with np.load(context.staging / EMBEDDINGS_FILE, allow_pickle=False) as index:
        train_embeddings, train_labels = index["embeddings"], index["labels"]
    files, section = fit_open_world(
        context.staging, validation, train_embeddings, train_labels, context.classes,
        context.options.open_world,
    )  # fmt: skip
    if len(validation.labels) and "temperature" in section:
        tta = fit_tta_calibration(
            validation.logits, np.concatenate(mirrored), validation.labels,
            section["temperature"],
        )  # fmt: skip
        section["tta_temperature"] = tta["temperature"]
        section["tta_calibration"] = tta | {"split": "val", "count": len(validation.labels)}
    return StepResult(files=files, entries={"open_world": section})
