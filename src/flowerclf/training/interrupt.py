"""What lets a training run survive being stopped: replayable epochs and clean interrupts.

* :func:`latest_epoch_checkpoint` writes ``last.ckpt`` at the end of every epoch, after its
  validation, where Lightning's own ``save_last`` would not (Lightning rewrites that file
  only when the monitored metric improves, so after a crash ``resume=`` would go back to
  the last improvement, however many epochs ago).
* :class:`EpochSeeding` reseeds every random stream an epoch draws from (Python, NumPy,
  torch, the training DataLoader's shuffle and worker seeds) from ``(seed, epoch)`` at the
  start of each epoch. An epoch therefore draws the same numbers whether the run went
  through it in one go or resumed from the previous epoch's checkpoint after being killed:
  ``resume=<run id>`` reaches the same weights and metrics as an uninterrupted run.
* :class:`GracefulInterrupt` turns SIGINT (Ctrl+C) and SIGTERM (``kill``, a scheduler's
  stop) into "finish this batch, save a checkpoint, exit with a message that says how to
  resume" instead of Lightning's exit without a checkpoint. A second signal stops at once.
  Lightning installs a SIGTERM handler of its own after ``on_fit_start`` that chains to
  ours and then ends the run with a bare ``SystemExit`` (exit status 0, Lightning issue
  #19916; no checkpoint of the interrupted batch, no message) at whichever of its checks
  comes first; the callback therefore takes SIGTERM back in ``on_train_start``, and
  :func:`interrupted_error` turns Lightning's exit, where it still happens (a signal during
  the sanity check), into the same error as ours.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from flowerclf.core.errors import TrainingInterruptedError

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_EPOCH_SEED_STRIDE = 1_000_003  # a prime: (seed, epoch) pairs do not collide in practice
_RANK_SEED_STRIDE = 7_919  # another prime, for the processes of a DDP run
_SEED_MODULUS = 2**32


def resumable_callbacks(seed: int, checkpoint_dir: Path, run_id: str | None) -> list[Callback]:
    """The callbacks that make a run resumable: epoch seeding and graceful interrupts."""
    return [
        latest_epoch_checkpoint(checkpoint_dir),
        EpochSeeding(seed),
        GracefulInterrupt(checkpoint_dir, resume_hint=run_id),
    ]


def interrupted_error(checkpoint_dir: Path, resume_hint: str | None) -> TrainingInterruptedError:
    """The error for a run that Lightning's own SIGTERM handling stopped (see module doc)."""
    last = checkpoint_dir / LAST_CHECKPOINT
    if last.is_file():
        where = f"; {_resume_advice(last, resume_hint)}"
    else:
        where = " before its first checkpoint; start it again"
    return TrainingInterruptedError(f"training stopped by SIGTERM{where}", signum=signal.SIGTERM)


def _resume_advice(checkpoint: Path, resume_hint: str | None) -> str:
    """The end of every interrupt message: where the checkpoint is and how to go on."""
    resume = resume_hint or str(checkpoint)
    return f"checkpoint saved to {checkpoint}. Continue with the same command plus resume={resume}"


def mark_interrupted(logger: Any, run_id: str | None) -> None:
    """Record an interrupted run as KILLED (Lightning has just marked it FAILED)."""
    if logger is not None and run_id is not None:
        logger.experiment.set_terminated(run_id, "KILLED")


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of epoch ``epoch`` of a run seeded with ``seed``, in process ``rank``.

    Each process of a DDP run draws its own augmentation (and MixUp) stream, so the
    processes do not repeat each other's random crops; rank 0 (and a one-process run) keeps
    the seeds it always had. Which images each process gets is the distributed sampler's
    business, seeded by the run's seed and the epoch alike on every rank.
    """
    return (seed + _EPOCH_SEED_STRIDE * (epoch + 1) + _RANK_SEED_STRIDE * rank) % _SEED_MODULUS


def latest_epoch_checkpoint(checkpoint_dir: Path) -> ModelCheckpoint:
    """``last.ckpt`` after every epoch (atomically): Lightning's unmonitored top-1 checkpoint.

    The run's best-epoch checkpoint must then not also write ``last.ckpt``
    (``save_last=False``), or Lightning would version one of them as ``last-v1.ckpt``.
    """
    return ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename=Path(LAST_CHECKPOINT).stem,
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,  # the same file, rewritten, also when resuming
        # At the very end of the epoch, whatever the validation schedule: a checkpoint
        # written at validation end (Lightning's choice when validation does not run every
        # epoch) resumes into an epoch that has ended without its validation metrics.
        save_on_train_epoch_end=True,
    )


class EpochSeeding(Callback):
    """Reseed every random stream at the start of each training epoch (see module doc)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._first_epoch_of_fit = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_epoch_of_fit = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        # The loader's own generator drives its shuffle and its workers' seeds.
        generator = getattr(trainer.train_dataloader, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)
        if self._first_epoch_of_fit:
            # Lightning opens (and prefetches from) the first epoch's iterator of each fit
            # before this hook, and every later epoch's after it; reopen it so that every
            # epoch, resumed or not, draws its data after the reseed.
            self._first_epoch_of_fit = False
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                iter(fetcher)


class GracefulInterrupt(Callback):
    """On SIGINT/SIGTERM: save ``last.ckpt`` at the next safe point and stop the run.

    Args:
        checkpoint_dir: where the run's ``last.ckpt`` lives (``resume=`` reads it there).
        resume_hint: what to pass as ``resume=`` (the run id, else the checkpoint path).
    """

    def __init__(self, checkpoint_dir: Path, resume_hint: str | None = None) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.resume_hint = resume_hint
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._active = False  # between on_fit_start and the end of fit

    # --- signal handlers ------------------------------------------------------------------

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if not self._active:
            # Reinstalled by Lightning's teardown after an exception ended the fit (it
            # restores what it found, i.e. this handler): behave as if it were gone.
            signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        if self.received is not None:  # asked twice: stop now, without a checkpoint
            self._restore()
            raise KeyboardInterrupt
        self.received = signum
        log.warning(
            "%s received: saving a checkpoint after this batch (send it again to stop now)",
            signal.Signals(signum).name,
        )

    def _install(self) -> None:
        # Signal handlers can only be set from the main thread (a training started from a
        # worker thread keeps the default behaviour).
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in HANDLED_SIGNALS:
            # Installed twice (see on_train_start): what to restore is what came first.
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._handle)
        self._active = True

    def _restore(self) -> None:
        self._active = False
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        """Whether any process was asked to stop.

        In a DDP run a signal may reach one process only (``kill`` of rank 0); all of them
        must stop at the same point, or the others would wait for it in their next
        collective forever. Every hook below is reached by all processes in step, so the
        decision is reduced across them there (a no-op with one process).
        """
        received = self.received is not None
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(received, all=False))
        return received

    # --- Lightning hooks ------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        if trainer.world_size > 1:
            # Only rank 0 knows the run (id and directory); the checks below that look at
            # last.ckpt must give the same answer in every process.
            self.checkpoint_dir, self.resume_hint = trainer.strategy.broadcast(
                (self.checkpoint_dir, self.resume_hint)
            )
        self._install()

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._give_back_through_lightning(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has installed its SIGTERM handler since on_fit_start (see module doc):
        # replace it, so that training batches and epochs end only the way this class does.
        self._install()
        self._give_back_through_lightning(trainer)

    def _give_back_through_lightning(self, trainer: L.Trainer) -> None:
        """Make Lightning's teardown put back the handlers found before this callback's.

        Lightning records every handler when it installs its own (after on_fit_start, so it
        records this callback's) and restores them in its teardown, which runs after
        ``on_exception``/``on_fit_end``: the process would keep this callback's handler
        after the fit. The handler then passes signals on (see ``_handle``), but a second
        fit in the same process would chain to it, and so on. Where Lightning's record is
        not there (another version), that fallback is what remains.
        """
        connector = getattr(trainer, "_signal_connector", None)
        recorded = getattr(connector, "_original_handlers", None)
        if not isinstance(recorded, dict):
            return
        for signum, previous in self._previous.items():
            if recorded.get(signum) == self._handle:
                recorded[signum] = previous

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        # A signal during the last validation or teardown (e.g. early stopping ended the
        # run first): still honour it, from the checkpoint the last epoch wrote.
        if self._stop_requested(trainer):
            last = self.checkpoint_dir / LAST_CHECKPOINT
            if not last.is_file():
                trainer.save_checkpoint(last)
            self._stop(trainer, last, self.received)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Between epochs the previous epoch's last.ckpt is the exact place to resume from.
        # A signal during validation lands here too (or in on_fit_end after the last
        # epoch): stopping inside validation would save a checkpoint whose epoch has
        # trained and validated but not ended, and resuming from it skips the validation
        # that early stopping then looks for.
        if self._stop_requested(trainer):
            last = self.checkpoint_dir / LAST_CHECKPOINT
            if not last.is_file():  # interrupted before the first epoch ended
                trainer.save_checkpoint(last)
            self._stop(trainer, last, self.received)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._stop_requested(trainer):
            last = self.checkpoint_dir / LAST_CHECKPOINT
            trainer.save_checkpoint(last)
            self._stop(trainer, last, self.received)

    def _stop(self, trainer: L.Trainer, checkpoint: Path, signum: int | None) -> None:
        # In a DDP run, a process that got no signal itself stops because another one did.
        name = signal.Signals(signum).name if signum is not None else "a signal to another process"
        raise TrainingInterruptedError(
            f"training stopped by {name} in epoch {trainer.current_epoch} (step "
            f"{trainer.global_step}); {_resume_advice(checkpoint, self.resume_hint)}",
            signum=signum if signum is not None else signal.SIGTERM,
        )
