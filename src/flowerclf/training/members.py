"""Deep ensembles of training seeds (``model.members`` > 1).

Each member is the same recipe trained in a run of its own, member ``k`` with seed
``seed + 100 k`` (so the ensembles of seeds 42, 43 and 44 share no member, and member 0
is the single model of that seed). The ensemble run then loads the members' best weights
into one :class:`~flowerclf.models.net.MemberEnsemble`, writes it as an ordinary
checkpoint, and evaluates and logs it like any run, so ``evaluate``, ``export`` and every
runtime take it as they take one model.

Members are independent: they can also be trained apart (on several machines, with
``model.members=1 seed=<seed + 100 k>``) and combined with ``member_runs=[...]``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch

from flowerclf.config.saved import load_run_config
from flowerclf.config.schema import FlowerclfConfig
from flowerclf.core.errors import ConfigError, RunStateError
from flowerclf.data.datamodule import FlowerDataModule
from flowerclf.models.backbones import split_backbone
from flowerclf.models.net import FlowerNet, MemberEnsemble
from flowerclf.models.preprocessing import spec_from_model_config
from flowerclf.tracking import load_checkpoint, resolve_checkpoint
from flowerclf.training.module import FlowerClassifier
from flowerclf.training.outputs import log_mlflow_model, predict_splits
from flowerclf.training.run import (
    EVAL_SPLITS,
    RunContext,
    TrainResult,
    check_fresh_run_dir,
    end_run_without_trainer,
    finish_run,
    open_run,
    record_start,
    with_resolved_data_root,
)
from flowerclf.training.seeding import seed_everything

log = logging.getLogger(__name__)

MEMBER_SEED_STRIDE = 100


def member_seed(seed: int, index: int) -> int:
    """The training seed of member ``index`` of an ensemble trained with ``seed``."""
    return seed + MEMBER_SEED_STRIDE * index


def member_config(cfg: FlowerclfConfig, index: int) -> FlowerclfConfig:
    """Member ``index``'s config: the same recipe as one model, its own seed, its own run
    directory (a fixed ``paths.run_dir`` belongs to the ensemble) and run name."""
    run_name = cfg.logger.run_name or f"{cfg.data.name}-{cfg.model.name}-{cfg.loss.name}"
    return cfg.model_copy(
        update={
            "model": cfg.model.updated(members=1, member_tail_blocks=None),
            "seed": member_seed(cfg.seed, index),
            "paths": cfg.paths.model_copy(update={"run_dir": None}),
            "logger": cfg.logger.model_copy(update={"run_name": f"{run_name}-member{index}"}),
            "member_runs": None,
        }
    )  # fmt: skip


def check_ensemble_config(cfg: FlowerclfConfig) -> None:
    """Refuse what an ensemble run cannot do, before any member trains."""
    if cfg.resume:
        raise ConfigError(
            "resume continues one run; an ensemble's members are runs of their own: resume "
            "the interrupted member (model.members=1 seed=<its seed> resume=<its run>), "
            "then combine the members with member_runs=[...]"
        )
    if cfg.member_runs is not None and len(cfg.member_runs) != cfg.model.members:
        raise ConfigError(
            f"member_runs names {len(cfg.member_runs)} runs but model.members is "
            f"{cfg.model.members}"
        )
    if cfg.trainer.devices * cfg.trainer.num_nodes > 1 and cfg.member_runs is None:
        raise ConfigError(
            "an ensemble trains its members one after another in one process; train each "
            "member as its own multi-process run (model.members=1 seed=<seed + 100 k>) and "
            "combine them with member_runs=[...]"
        )


def train_ensemble(
    cfg: FlowerclfConfig, train_one: Callable[[FlowerclfConfig], TrainResult], started: float
) -> TrainResult:
    """Train ``cfg.model.members`` members (or take ``cfg.member_runs``) and combine them.

    ``train_one`` is :func:`flowerclf.training.train.train` (passed in: that module imports
    this one). ``train_time_s`` counts the members' training too.
    """
    check_ensemble_config(cfg)
    if cfg.member_runs is not None:
        checkpoints = [resolve_checkpoint(target)[0] for target in cfg.member_runs]
        member_ids = list(cfg.member_runs)
        seconds = [_recorded_train_time(checkpoint) for checkpoint in checkpoints]
        # What the members cost counts as if they had trained here (in series: machine
        # time, which is more than the wall time of members trained side by side).
        started -= sum(seconds)
    else:
        results = [train_one(member_config(cfg, k)) for k in range(cfg.model.members)]
        checkpoints = [Path(result.checkpoint) for result in results]
        member_ids = [result.run_id or result.checkpoint for result in results]
        seconds = [result.train_time_s for result in results]
    return combine_members(cfg, checkpoints, member_ids, started, sum(seconds))


def _recorded_metrics(checkpoint: Path) -> dict[str, float]:
    """The ``metrics.json`` a finished run wrote beside its checkpoints (empty if none)."""
    path = checkpoint.parent.parent / "metrics.json"
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in recorded.items() if isinstance(v, int | float)}


def _recorded_train_time(checkpoint: Path) -> float:
    """A finished run's ``train_time_s`` from its run directory (0 where it is missing)."""
    seconds = _recorded_metrics(checkpoint).get("train_time_s")
    if seconds is None:
        log.warning("no train_time_s beside %s: the ensemble's time leaves this member out",
                    checkpoint)  # fmt: skip
        return 0.0
    return seconds


def member_accuracies(checkpoints: Sequence[Path]) -> dict[str, float]:
    """What the members scored alone, as the ensemble's metrics ``members/<split>/
    accuracy_{mean,min,max}``: how much averaging them gained, in the run itself. A split
    some member has no figure for is left out."""
    recorded = [_recorded_metrics(checkpoint) for checkpoint in checkpoints]
    summary: dict[str, float] = {}
    for split in EVAL_SPLITS:
        key = f"{split}/accuracy"
        values = [metrics[key] for metrics in recorded if key in metrics]
        if not values or len(values) < len(recorded):
            continue
        summary[f"members/{split}/accuracy_mean"] = sum(values) / len(values)
        summary[f"members/{split}/accuracy_min"] = min(values)
        summary[f"members/{split}/accuracy_max"] = max(values)
    return summary


def _member_nets(checkpoints: Sequence[Path], arch: str, classes: list[str]) -> list[FlowerNet]:
    """Each member's trained network, checked to be ``arch`` over ``classes``."""
    nets = []
    for checkpoint in checkpoints:
        saved = load_checkpoint(checkpoint)
        hparams = saved["hyper_parameters"]
        config = load_run_config(hparams["config"])
        if config.model.arch != arch or list(hparams["classes"]) != classes:
            raise RunStateError(
                f"member {checkpoint} is {config.model.arch} over {len(hparams['classes'])} "
                f"classes; this ensemble is {arch} over the {len(classes)} classes of its "
                f"dataset: members must be the same model on the same dataset"
            )
        if config.model.members != 1:
            raise RunStateError(f"member {checkpoint} is itself an ensemble; combine single models")
        module = FlowerClassifier(config, classes, hparams["spec"], pretrained=False)
        module.load_state_dict(saved["state_dict"])
        nets.append(module.net)
    return nets


def shared_tail_blocks(cfg: FlowerclfConfig, nets: Sequence[FlowerNet]) -> int | None:
    """How many last blocks the members differ in, when all before them is one trunk.

    Members trained on cached trunk outputs (or with a frozen trunk on images) share the
    trunk they started from; the weights decide, so members started from different
    weights run whole instead of silently sharing the first one's trunk.
    """
    trainer = cfg.trainer
    if trainer.mode != "cached" and trainer.tail_blocks == 0:
        return None  # full fine-tuning: every layer of every member moved
    trunks = [split_backbone(net.backbone, trainer.tail_blocks)[0].state_dict() for net in nets]
    first = trunks[0]
    same = all(
        trunk.keys() == first.keys() and all(torch.equal(trunk[k], first[k]) for k in first)
        for trunk in trunks[1:]
    )
    if not same:
        log.info("members' trunks differ: each member runs whole")
        return None
    return trainer.tail_blocks


def combine_members(
    cfg: FlowerclfConfig,
    checkpoints: Sequence[Path],
    member_ids: Sequence[str],
    started: float,
    member_seconds: float,
) -> TrainResult:
    """One run holding the members as a :class:`MemberEnsemble`, evaluated and logged;
    its metrics add ``members_train_time_s`` (the members' training, part of the total)
    and the members' own accuracies (:func:`member_accuracies`)."""
    cfg = with_resolved_data_root(cfg)
    seed_everything(cfg.seed)
    spec = spec_from_model_config(cfg.model)
    datamodule = FlowerDataModule.from_config(cfg, spec)
    datamodule.setup()
    nets = _member_nets(checkpoints, cfg.model.arch, datamodule.classes)
    shared = shared_tail_blocks(cfg, nets)
    cfg = cfg.model_copy(
        update={"model": cfg.model.updated(members=len(nets), member_tail_blocks=shared)}
    )
    context = open_run(cfg, datamodule, started=started)
    if cfg.paths.run_dir:
        check_fresh_run_dir(context.run_dir)
    module = FlowerClassifier(context.config, datamodule.classes, spec.to_dict(), pretrained=False)
    ensemble: MemberEnsemble = module.net  # type: ignore[assignment]
    for slot, net in zip(ensemble.members, nets, strict=True):
        slot.load_state_dict(net.state_dict())
    module.eval()
    record_start(context, loss=cfg.loss.name, trainer=f"members:{len(nets)}",
                 weights=module.weights_origin, members=",".join(member_ids))  # fmt: skip
    best_path = _write_checkpoint(module, context)
    predictions = predict_splits(module, datamodule, None)
    more = {"members_train_time_s": round(member_seconds, 2), **member_accuracies(checkpoints)}
    result = finish_run(context, predictions, best_path, extra_metrics=more)
    _nest_members(context, member_ids)
    if context.logger is not None and context.run_id is not None and cfg.logger.log_model:
        log_mlflow_model(module, datamodule, context.tracking_uri, context.run_id)
    end_run_without_trainer(context)
    log.info("ensemble of %d members: run %s, %.0f s", len(nets), result.run_id,
             time.perf_counter() - started)  # fmt: skip
    return result


def _write_checkpoint(module: FlowerClassifier, context: RunContext) -> Path:
    """The ensemble as a checkpoint of the form Lightning writes (state dict and the
    hyper-parameters that rebuild it), so ``load_trained`` reads it as any run's."""
    path = context.run_dir / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
            "epoch": 0,
            "global_step": 0,
        },
        path,
    )
    return path


def _nest_members(context: RunContext, member_ids: Sequence[str]) -> None:
    """Show the member runs under the ensemble's run in the MLflow UI."""
    if context.logger is None or context.run_id is None:
        return
    client = context.logger.experiment
    for member in member_ids:
        if Path(member).suffix != ".ckpt":
            client.set_tag(member, "mlflow.parentRunId", context.run_id)
