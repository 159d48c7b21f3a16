"""Interrupted fits, run in a process of their own: ``python interrupt_scenarios.py OUT NAME...``.

A test that signals its own process shares that process with the test runner: a signal
that reaches no handler of the code under test (SIGTERM's default action is to terminate)
kills the whole pytest-xdist worker, and the run loses every test queued on it. Here each
scenario runs in this separate process instead, and one JSON line per finished scenario
goes to ``OUT/results.jsonl`` (flushed at once), so a scenario that kills the process is
named by the first one missing from the file.

The process starts with the handlers of a plain ``flowerclf train``: Python's SIGINT
handler and SIGTERM at its default action. Signals are sent with ``signal.raise_signal``,
which delivers to this thread and runs the Python handler before it returns; ``os.kill``
of the own pid may be taken by another thread and handled later, which made the outcome
depend on the machine's load.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flowerclf.core.errors import TrainingInterruptedError
from flowerclf.training.interrupt import (
    LAST_CHECKPOINT,
    GracefulInterrupt,
    latest_epoch_checkpoint,
)

RESULTS_FILE = "results.jsonl"
HANDLERS_GIVEN_BACK = "handlers_given_back"
RESUME_HINT = "run-1"


def fit_scenario(hook: str, signum: signal.Signals) -> str:
    """The name of the scenario that sends ``signum`` from ``hook`` in the first epoch."""
    return f"fit:{hook}:{signum.name}"


class _Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, targets = batch
        return nn.functional.cross_entropy(self.layer(inputs), targets)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, targets = batch
        self.log("val_loss", nn.functional.cross_entropy(self.layer(inputs), targets))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _SignalAt(Callback):
    """Sends ``signum`` to this process once, from the named hook of the given epoch."""

    def __init__(self, hook: str, signum: signal.Signals, epoch: int = 0) -> None:
        self.signum, self.epoch, self.sent = signum, epoch, False
        setattr(self, hook, self._send)

    def _send(self, trainer: L.Trainer, *args: object) -> None:
        if not self.sent and trainer.current_epoch == self.epoch:
            self.sent = True
            signal.raise_signal(self.signum)


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 4, generator=generator)
    return DataLoader(TensorDataset(inputs, (inputs[:, 0] > 0).long()), batch_size=8)


def _fit(checkpoint_dir: Path, *callbacks: Callback) -> None:
    trainer = L.Trainer(
        max_epochs=5,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[
            latest_epoch_checkpoint(checkpoint_dir),
            GracefulInterrupt(checkpoint_dir, resume_hint=RESUME_HINT),
            *callbacks,
        ],
    )
    trainer.fit(_Linear(), train_dataloaders=_loader(), val_dataloaders=_loader())


def _interrupted_fit(checkpoint_dir: Path, hook: str, signum: signal.Signals) -> dict[str, Any]:
    """How a fit signalled from ``hook`` ended: the error, its signum, the checkpoint."""
    outcome: dict[str, Any] = {"error": None}
    try:
        _fit(checkpoint_dir, _SignalAt(hook, signum))
    except TrainingInterruptedError as stopped:
        outcome.update(error=type(stopped).__name__, signum=stopped.signum, message=str(stopped))
    except BaseException as other:  # any other ending is the finding
        outcome.update(error=type(other).__name__, message=str(other))
    outcome["last_checkpoint"] = (checkpoint_dir / LAST_CHECKPOINT).is_file()
    return outcome


def _handlers_given_back(checkpoint_dir: Path) -> dict[str, Any]:
    """After an interrupted fit, SIGINT and SIGTERM have the handlers they had before it."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    outcome = _interrupted_fit(checkpoint_dir, "on_train_batch_end", signal.SIGINT)
    outcome["handlers_are_the_originals"] = {
        signum.name: signal.getsignal(signum) is handler for signum, handler in before.items()
    }
    # ... so SIGINT acts as it did before the fit (Python's handler: KeyboardInterrupt).
    try:
        signal.raise_signal(signal.SIGINT)
        outcome["sigint_after_fit"] = "nothing raised"
    except KeyboardInterrupt:
        outcome["sigint_after_fit"] = "KeyboardInterrupt"
    return outcome


def _run(name: str, scenario_dir: Path) -> dict[str, Any]:
    scenario_dir.mkdir(parents=True)
    if name == HANDLERS_GIVEN_BACK:
        return _handlers_given_back(scenario_dir)
    _, hook, signal_name = name.split(":")
    return _interrupted_fit(scenario_dir, hook, signal.Signals[signal_name])


def main(out_dir: Path, names: list[str]) -> None:
    # What a plain `flowerclf train` starts with, whatever the parent left inherited.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with (out_dir / RESULTS_FILE).open("a", encoding="utf-8") as results:
        for index, name in enumerate(names):
            record = {"scenario": name, **_run(name, out_dir / f"scenario-{index}")}
            results.write(json.dumps(record) + "\n")
            results.flush()
            os.fsync(results.fileno())


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
