"""Run a trained network over a loader and read back a run's per-epoch history.

Used at the end of training and by ``flowerclf evaluate``, so both score a model the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn
from tqdm.auto import tqdm

from flowerclf.core.metric_names import HISTORY_METRICS
from flowerclf.core.preprocess import PreprocessSpec
from flowerclf.metrics.report import Predictions
from flowerclf.models.runners import Runner, make_runner, torch_runner


def predict_loader(run: Runner, loader: Iterable[Any], desc: str = "predict") -> Predictions:
    """Run ``images -> (logits, embeddings)`` over a loader of ``(inputs, labels, ids)``."""
    probabilities, embeddings, labels, ids = [], [], [], []
    for inputs, batch_labels, batch_ids in tqdm(loader, desc=desc, unit="batch", leave=False):
        logits, emb = run(inputs)[:2]
        probabilities.append(logits.float().softmax(dim=1).cpu().numpy())
        embeddings.append(emb.float().cpu().numpy())
        labels.append(np.asarray(batch_labels))
        ids.append(np.asarray(batch_ids))
    return Predictions(
        np.concatenate(probabilities), np.concatenate(embeddings), np.concatenate(labels),
        np.concatenate(ids),
    )  # fmt: skip


class FromTrunk(nn.Module):
    """Cached frozen-trunk outputs -> (logits, embeddings): the rest of the network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, trunk_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_from_trunk(trunk_out)


def image_runner(net: nn.Module, spec: PreprocessSpec) -> Runner:
    """Fastest way to run the whole net here: the fastest fp32 CPU runtime installed
    (OpenVINO, else ONNX Runtime: ``make_runner(..., "auto")``), eager on GPU."""
    if torch.cuda.is_available():
        device_net = net.to("cuda").eval()
        return lambda images: torch_runner(device_net)(images.to("cuda"))
    return make_runner(net, "auto", spec.input_size, ["logits", "embeddings"])


def run_history(
    logger: MLFlowLogger | None, run_id: str | None
) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch train/val loss and accuracy from the run (for the curves plot)."""
    if logger is None or run_id is None:
        return {}
    client = logger.experiment
    # Lightning logs the epoch number at every logging step; map steps back to epochs.
    epoch_of = {int(p.step): int(p.value) for p in client.get_metric_history(run_id, "epoch")}
    return {
        name: sorted(
            (epoch_of.get(int(p.step), int(p.step)), float(p.value))
            for p in client.get_metric_history(run_id, name)
        )
        for name in HISTORY_METRICS
    }


def write_history(history: Mapping[str, list[tuple[int, float]]], path: Path) -> None:
    """Per-epoch metrics as CSV (epoch, train/loss, ...): the DVC pipeline's data plot.

    The history comes from the MLflow run; without tracking (``logger=none``) the file holds
    only its header, so that the pipeline's declared output still exists.
    """
    names = list(HISTORY_METRICS)
    table: dict[int, dict[str, float]] = {}
    for name in names:
        for epoch, value in history.get(name, []):
            table.setdefault(epoch, {})[name] = value  # the last value logged in an epoch
    lines = [",".join(["epoch", *names])]
    for epoch in sorted(table):
        row = table[epoch]
        lines.append(",".join([str(epoch), *(f"{row[n]:.6g}" if n in row else "" for n in names)]))
    path.write_text("\n".join(lines) + "\n")
