"""``train(cfg) -> TrainResult``: a training run as a short list of named steps.

1. seed, resolve preprocessing from the model, open the prepared dataset;
2. open (or continue) an MLflow run through Lightning's ``MLFlowLogger`` (:mod:`.run`);
3. fit with Lightning, on images (``trainer.mode=finetune``) or on cached frozen-trunk
   outputs (``trainer.mode=cached``, the CPU fast path);
4. reload the best checkpoint, predict train/val/test, and end the run like every other
   model (:func:`flowerclf.training.run.finish_run`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from flowerclf.config.saved import load_run_config
from flowerclf.config.schema import FlowerclfConfig, TrainerConfig
from flowerclf.core.errors import (
    ConfigError,
    RunNotFoundError,
    RunStateError,
    TrainingInterruptedError,
)
from flowerclf.core.preprocess import PreprocessSpec
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.data.prepare import resolve_root
from flowerclf.models.preprocessing import spec_from_model_config
from flowerclf.tracking import load_checkpoint, resolve_checkpoint
from flowerclf.training.baseline import train_majority
from flowerclf.training.distributed import global_rank_from_env, world_size
from flowerclf.training.features import CachedSplit, build_feature_cache, features_dataset
from flowerclf.training.interrupt import (
    interrupted_error,
    mark_interrupted,
    resumable_callbacks,
)
from flowerclf.training.members import train_ensemble
from flowerclf.training.module import FlowerClassifier
from flowerclf.training.outputs import log_mlflow_model, predict_splits
from flowerclf.training.run import (
    RunContext,
    TrainResult,
    check_fresh_run_dir,
    finish_run,
    fixed_run_dir,
    open_run,
    record_start,
    with_resolved_data_root,
)
from flowerclf.training.seeding import seed_everything

# Warnings Lightning raises on every run that say nothing about the user's run: frozen
# modules are in eval mode on purpose (the frozen trunk keeps its ImageNet BatchNorm
# statistics), and Lightning itself calls a torch API that torch has deprecated.
_EXPECTED_WARNINGS = (r".*module\(s\) in eval mode.*", r".*isinstance\(treespec, LeafSpec\).*")

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "train"]


def _precision(trainer: TrainerConfig) -> str:
    if trainer.precision != "auto":
        return trainer.precision
    gpu = trainer.accelerator in ("gpu", "cuda") or (
        trainer.accelerator == "auto" and torch.cuda.is_available()
    )
    return "16-mixed" if gpu else "32-true"


def _find_resume(
    resume: str | None, output_dir: Path, fixed_run_dir: Path | None = None
) -> tuple[str | None, Path | None]:
    """``resume`` (run id or checkpoint path) -> (run id, last checkpoint)."""
    if not resume:
        return None, None
    path = Path(resume)
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise RunNotFoundError(f"resume checkpoint {path} does not exist")
        hparams = load_checkpoint(path)["hyper_parameters"]
        return load_run_config(hparams["config"]).run.id, path
    last = (fixed_run_dir or output_dir / "runs" / resume) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RunNotFoundError(
            f"cannot resume run {resume}: {last} not found (are paths.output_dir and "
            f"paths.run_dir the same as for the interrupted run?)"
        )
    return resume, last


def initialise_from(module: FlowerClassifier, target: str, arch: str) -> str:
    """Load the network (and loss) weights of an earlier run or checkpoint into ``module``.

    Unlike ``resume``, this starts a new run with the current config (optimiser, schedule,
    trainer mode); only the weights carry over. Returns a description for the run's tags.
    """
    checkpoint, run_id = resolve_checkpoint(target)
    saved = load_checkpoint(checkpoint)
    hparams = saved["hyper_parameters"]
    saved_arch = load_run_config(hparams["config"]).model.arch
    if saved_arch != arch or list(hparams["classes"]) != module.classes:
        raise RunStateError(
            f"init_from={target}: that model is {saved_arch} with classes "
            f"{list(hparams['classes'])}; this run is {arch} with classes {module.classes}. "
            f"init_from needs the same model and the same dataset classes."
        )
    state = saved["state_dict"]
    module.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    criterion = {k[10:]: v for k, v in state.items() if k.startswith("criterion.")}
    if criterion and criterion.keys() == module.criterion.state_dict().keys():
        module.criterion.load_state_dict(criterion)  # e.g. SigLIP class embeddings
    log.info("initialised from %s", checkpoint)
    return f"init_from:{run_id or checkpoint}"


def _callbacks(cfg: FlowerclfConfig, checkpoint_dir: Path) -> tuple[list[Any], ModelCheckpoint]:
    stopping = cfg.trainer.early_stopping
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best",
        monitor=stopping.monitor,
        mode=stopping.mode,
        save_last=False,  # last.ckpt is written every epoch by the resumable callbacks
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    callbacks: list[Any] = [
        checkpoint,
        EarlyStopping(
            monitor=stopping.monitor,
            mode=stopping.mode,
            patience=stopping.patience,
            min_delta=stopping.min_delta,
        ),
    ]
    if cfg.logger.enabled:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    return callbacks, checkpoint


def train(cfg: FlowerclfConfig) -> TrainResult:
    """Run one training job described by a composed, validated config
    (:func:`flowerclf.config.compose_config`).

    With ``model.members`` > 1, each member trains as a run of this function, and one more
    run holds their ensemble (:mod:`flowerclf.training.members`).

    With ``warm_start`` (and neither ``init_from`` nor ``resume``), the named experiment
    first trains the same model in a run of its own (:func:`warm_start_config`), and this
    run starts from its best checkpoint; ``train_time_s`` then counts both, and the
    metrics add ``warm_start_time_s``.
    """
    started = time.perf_counter()
    if cfg.model.members > 1:
        return train_ensemble(cfg, train, started)
    if cfg.member_runs is not None:
        raise ConfigError("member_runs combines an ensemble's members: set model.members too")
    if cfg.warm_start and not (cfg.init_from or cfg.resume):
        if world_size(cfg.trainer.devices, cfg.trainer.num_nodes) > 1:
            raise ConfigError(
                "warm_start runs in one process; train the warm start first and pass its "
                "run to init_from= for a multi-process run"
            )
        first = train(warm_start_config(cfg))
        log.info("warm start %s: run %s, %.0f s", cfg.warm_start, first.run_id,
                 first.train_time_s)  # fmt: skip
        resumed = cfg.model_copy(update={"init_from": first.checkpoint})
        return _train(resumed, started, {"warm_start_time_s": first.train_time_s})
    return _train(cfg, started, {})


def warm_start_config(cfg: FlowerclfConfig) -> FlowerclfConfig:
    """The warm start's config: ``experiment=<cfg.warm_start>`` for how to train (trainer,
    augment, loss), and ``cfg``'s model, data, seed, output and tracking settings, in a
    run directory of its own (a fixed ``paths.run_dir`` belongs to the second run)."""
    from flowerclf.config import compose_config

    how = compose_config([f"experiment={cfg.warm_start}"])
    return how.model_copy(
        update={
            "data": cfg.data, "model": cfg.model, "seed": cfg.seed, "logger": cfg.logger,
            "paths": cfg.paths.model_copy(update={"run_dir": None}),
            "resume": None, "init_from": None, "warm_start": None,
        }
    )  # fmt: skip


def _train(cfg: FlowerclfConfig, started: float, more_metrics: dict[str, float]) -> TrainResult:
    cfg = with_resolved_data_root(cfg)
    run_dir = fixed_run_dir(cfg)
    resume_run, resume_ckpt = _find_resume(
        cfg.resume, Path(cfg.paths.output_dir).resolve(), run_dir
    )
    rank = _launch_rank(cfg.trainer)
    if run_dir is not None and resume_ckpt is None and rank == 0:
        check_fresh_run_dir(run_dir)
    seed_everything(cfg.seed)
    spec = spec_from_model_config(cfg.model)
    datamodule = FlowerDataModule.from_config(cfg, spec)
    datamodule.setup()
    if cfg.model.arch == "majority":
        if rank != 0:  # started by torchrun/srun with the rest: nothing to fit, rank 0 logs
            return TrainResult.other_rank(
                rank, open_run(cfg, datamodule, started=started, rank=rank)
            )
        return train_majority(open_run(cfg, datamodule, started=started))

    context = open_run(cfg, datamodule, resume_run, started, rank=rank)
    module = _build_module(context, spec)
    if resume_run is None:
        record_start(
            context, loss=cfg.loss.name, trainer=cfg.trainer.mode, weights=module.weights_origin
        )
    trainer, checkpoint_cb = _make_trainer(context)
    caches, cache_seconds = (None, 0.0)
    if cfg.trainer.mode == "cached":
        caches, cache_seconds = feature_caches(context, module, spec)
    try:
        _fit(trainer, module, datamodule, caches, resume_ckpt)
    except TrainingInterruptedError:
        mark_interrupted(context.logger, context.run_id)
        raise
    except SIGTERMException as lightning_exit:  # its own handling: a bare exit status 0
        mark_interrupted(context.logger, context.run_id)
        checkpoints = context.run_dir / "checkpoints"
        raise interrupted_error(checkpoints, context.run_id) from lightning_exit
    if not trainer.is_global_zero:
        # The other processes of a DDP run are done: rank 0 wrote the checkpoints and now
        # evaluates and logs the run once, on the whole of each split.
        return TrainResult.other_rank(trainer.global_rank, context)
    best_path = _load_best(module, checkpoint_cb)
    predictions = predict_splits(module, datamodule, caches)
    # Near zero when an earlier run's cache was reused: say so next to the total.
    extra_metrics = {"feature_cache_s": round(cache_seconds, 2)} if caches is not None else {}
    extra_metrics |= more_metrics
    if trainer.world_size > 1:
        extra_metrics["world_size"] = trainer.world_size  # the processes fit ran on (DDP)
    result = finish_run(
        context, predictions, best_path, step=int(module.global_step), extra_metrics=extra_metrics
    )
    if context.logger is not None and context.run_id is not None and cfg.logger.log_model:
        log_mlflow_model(module, datamodule, context.tracking_uri, context.run_id)
    return result


def _launch_rank(trainer: TrainerConfig) -> int:
    """This process's global rank (0 unless the run has several processes)."""
    if world_size(trainer.devices, trainer.num_nodes) == 1:
        return 0
    return global_rank_from_env(trainer.devices)


def _build_module(context: RunContext, spec: PreprocessSpec) -> FlowerClassifier:
    cfg = context.config
    module = FlowerClassifier(
        cfg, context.datamodule.classes, spec.to_dict(), pretrained=not cfg.init_from,
        input_mode="trunk" if cfg.trainer.mode == "cached" else "image",
    )  # fmt: skip
    if cfg.init_from:  # also when resuming: a cached trunk must be computed from these weights
        module.weights_origin = initialise_from(module, cfg.init_from, cfg.model.arch)
    return module


def _make_trainer(context: RunContext) -> tuple[L.Trainer, ModelCheckpoint]:
    cfg = context.config
    callbacks, checkpoint_cb = _callbacks(cfg, context.run_dir / "checkpoints")
    callbacks += resumable_callbacks(int(cfg.seed), context.run_dir / "checkpoints", context.run_id)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=cfg.trainer.strategy,
        precision=_precision(cfg.trainer),  # type: ignore[arg-type]
        max_epochs=cfg.trainer.max_epochs,
        logger=context.logger if context.logger is not None else False,
        callbacks=callbacks,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        check_val_every_n_epoch=cfg.trainer.check_val_every_n_epoch,
        deterministic=cfg.trainer.deterministic,
        limit_train_batches=cfg.trainer.limit_train_batches,
        limit_val_batches=cfg.trainer.limit_val_batches,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        default_root_dir=str(context.run_dir),
        enable_model_summary=False,
    )
    return trainer, checkpoint_cb


def _holdout_key(share: float, seed: int) -> dict[str, Any]:
    """The calibration hold-out's part of the cache key: absent without one (so caches
    built before it existed still match), else the share and the seed that drew it."""
    return {"calibration_holdout": [share, seed]} if share > 0 else {}


def feature_caches(
    context: RunContext, module: FlowerClassifier, spec: PreprocessSpec
) -> tuple[dict[str, CachedSplit], float]:
    """The frozen trunk's outputs for every split (built once, then reused by key).

    Public: scripts/head_probe.py fits its probe on the same cached features.
    """
    cfg, datamodule = context.config, context.datamodule
    started = time.perf_counter()
    cache_dir = (
        Path(cfg.paths.cache_dir)
        if cfg.paths.cache_dir
        else resolve_root(cfg.data.root) / "cache" / "features"
    )
    caches = build_feature_cache(
        module.net.trunk,
        datamodule,
        views=cfg.trainer.cache_views,
        runtime=cfg.trainer.feature_runtime,
        seed=cfg.seed,
        cache_dir=cache_dir,
        key_parts={
            "manifest": datamodule.manifest_sha256,
            "arch": cfg.model.arch,
            "weights": module.weights_origin,
            "tail_blocks": cfg.trainer.tail_blocks,
            "spec": spec.to_dict(),
            "augment": cfg.augment.to_dict(),
            "train_splits": list(cfg.trainer.train_splits),
            **_holdout_key(cfg.trainer.calibration_holdout, cfg.seed),
        },
    )
    return caches, time.perf_counter() - started


def _cached_loaders(
    caches: Mapping[str, CachedSplit], batch: int, seed: int
) -> tuple[DataLoader[Any], DataLoader[Any]]:
    train_loader = DataLoader(
        features_dataset(caches["train"]), batch_size=batch, shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(caches["train"].labels) % batch == 1,
    )  # fmt: skip
    return train_loader, DataLoader(features_dataset(caches["val"]), batch_size=batch)


def _fit(
    trainer: L.Trainer,
    module: FlowerClassifier,
    datamodule: FlowerDataModule,
    caches: Mapping[str, CachedSplit] | None,
    resume_ckpt: Path | None,
) -> None:
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        if caches is not None:
            batch, seed = module.config.trainer.cached_batch_size, module.config.seed
            train_loader, val_loader = _cached_loaders(caches, batch, seed)
            trainer.fit(module, train_loader, val_loader, ckpt_path=resume_ckpt, weights_only=True)
        else:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_ckpt, weights_only=True)


def _load_best(module: FlowerClassifier, checkpoint_cb: ModelCheckpoint) -> Path:
    """Put the best epoch's weights back into ``module`` (on CPU); return its checkpoint."""
    best_path = Path(
        checkpoint_cb.best_model_path or Path(str(checkpoint_cb.dirpath)) / "last.ckpt"
    )
    state = load_checkpoint(best_path)["state_dict"]
    module.load_state_dict(state)
    module.to("cpu")
    module.eval()
    return best_path
