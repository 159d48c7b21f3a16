"""SIGTERM and SIGINT always end a fit the same way, wherever in the loop they land.

Lightning's own SIGTERM handler (installed after ``on_fit_start``) ends a run with a bare
``SystemExit`` (exit status 0, no message) at the end of an epoch; a signal that arrives
during validation used to take that way out. These tests send the signal from inside the
loop, at a fixed point, so the outcome does not depend on timing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flowerclf.core.errors import TrainingInterruptedError
from flowerclf.training.interrupt import (
    LAST_CHECKPOINT,
    GracefulInterrupt,
    interrupted_error,
    latest_epoch_checkpoint,
)


class _StraySignalError(Exception):
    """A signal that reached no handler of the code under test."""


def _stray(signum: int, frame: object) -> None:
    raise _StraySignalError(signal.Signals(signum).name)


@pytest.fixture(autouse=True)
def _python_signal_handlers() -> Iterator[None]:
    """Python handlers for SIGINT and SIGTERM around each test, put back afterwards.

    A pytest-xdist worker has SIGTERM at its default action (terminate), or a handler that
    C code installed (``signal.getsignal`` gives None, which cannot be restored). A signal
    that then reached no handler of the code under test killed the whole worker in CI
    ("node down"); with these it fails the one test instead.
    """
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stray)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


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
            os.kill(os.getpid(), self.signum)


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 4, generator=generator)
    return DataLoader(TensorDataset(inputs, (inputs[:, 0] > 0).long()), batch_size=8)


@pytest.fixture(autouse=True)
def _original_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _fit(tmp_path: Path, *callbacks: Callback, sanity_steps: int = 0) -> None:
    trainer = L.Trainer(
        max_epochs=5,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=sanity_steps,
        callbacks=[
            latest_epoch_checkpoint(tmp_path),
            GracefulInterrupt(tmp_path, resume_hint="run-1"),
            *callbacks,
        ],
    )
    trainer.fit(_Linear(), train_dataloaders=_loader(), val_dataloaders=_loader())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(
    "hook", ["on_validation_batch_end", "on_train_batch_start", "on_train_epoch_end"]
)
def test_a_signal_anywhere_in_an_epoch_saves_and_raises_the_resumable_error(
    tmp_path: Path, hook: str, signum: signal.Signals
) -> None:
    with pytest.raises(TrainingInterruptedError) as stopped:
        _fit(tmp_path, _SignalAt(hook, signum))
    assert stopped.value.signum == signum
    assert f"stopped by {signum.name} in epoch" in str(stopped.value)
    assert "resume=run-1" in str(stopped.value)
    assert (tmp_path / LAST_CHECKPOINT).is_file()


def test_handlers_are_given_back_after_an_interrupted_fit(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterruptedError):
        _fit(tmp_path, _SignalAt("on_train_batch_end", signal.SIGINT))
    # Lightning's teardown may put the callback's handler back; it must then act as the
    # original one did (Python's default SIGINT handler raises KeyboardInterrupt).
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_lightnings_own_sigterm_exit_becomes_the_same_error(tmp_path: Path) -> None:
    assert interrupted_error(tmp_path, "run-1").signum == signal.SIGTERM
    assert "before its first checkpoint" in str(interrupted_error(tmp_path, "run-1"))
    (tmp_path / LAST_CHECKPOINT).write_bytes(b"")
    message = str(interrupted_error(tmp_path, "run-1"))
    assert message.startswith("training stopped by SIGTERM; checkpoint saved to")
    assert message.endswith("resume=run-1")
