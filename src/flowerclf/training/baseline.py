"""The majority-class baseline, evaluated and tracked exactly like a trained model."""

from __future__ import annotations

import json

import numpy as np

from flowerclf.metrics.report import Predictions
from flowerclf.training.run import (
    EVAL_SPLITS,
    RunContext,
    TrainResult,
    end_run_without_trainer,
    finish_run,
    record_start,
)


def train_majority(context: RunContext) -> TrainResult:
    """ "Train" (count the classes), then end the run like every other model.

    The predicted distribution is the training class prior, so cross-entropy is finite and
    the predicted class is always the most frequent training class. The baseline has no
    embeddings: its run has no kNN accuracy and no ``embeddings.npz``.
    """
    datamodule = context.datamodule
    classes = datamodule.classes
    train_labels = np.asarray([r.label for r in datamodule.training_rows()], dtype=np.int64)
    prior = np.bincount(train_labels, minlength=len(classes)).astype(np.float64)
    prior /= prior.sum()
    record_start(context)
    context.run_dir.mkdir(parents=True, exist_ok=True)
    model_path = context.run_dir / "majority.json"
    model = {"classes": classes, "prior": prior.tolist(), "predicts": classes[int(prior.argmax())]}
    model_path.write_text(json.dumps(model, indent=2))
    predictions = {}
    for split in EVAL_SPLITS:
        rows = datamodule.split_rows(split)
        predictions[split] = Predictions(
            probabilities=np.tile(prior, (len(rows), 1)),
            embeddings=np.zeros((len(rows), 1), dtype=np.float32),
            labels=np.asarray([r.label for r in rows], dtype=np.int64),
            ids=np.asarray([r.id for r in rows], dtype=np.int64),
        )
    result = finish_run(context, predictions, model_path)
    end_run_without_trainer(context)
    return result
