"""``train(cfg) -> TrainResult``: the whole training run as one plain function.

1. seed, resolve preprocessing from the model, open the prepared dataset;
2. open (or continue) an MLflow run through Lightning's ``MLFlowLogger``;
3. fit with Lightning, on images (``trainer.mode=finetune``) or on cached frozen-trunk
   outputs (``trainer.mode=cached``, the CPU fast path);
4. reload the best checkpoint, evaluate val and test, save embeddings of every manifest
   image and their kNN accuracy, log metrics, reports, plots and the model to the run.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from flowerclf.data.datamodule import FlowerDataModule, prepared_raw_dir
from flowerclf.data.prepare import resolve_root
from flowerclf.evaluation.embeddings import EMBEDDINGS_FILE, knn_accuracy, save_embeddings
from flowerclf.evaluation.report import Predictions, write_evaluation
from flowerclf.models.onnx_runtime import Runner, make_runner, torch_runner
from flowerclf.preprocess import PreprocessSpec, spec_from_model_config
from flowerclf.training.features import build_feature_cache, features_dataset
from flowerclf.training.module import FlowerClassifier
from flowerclf.training.tracking import (
    flatten,
    hardware_description,
    resolve_tracking_uri,
    run_tags,
)
from flowerclf.utils.seeding import seed_everything

# Warnings Lightning raises on every run that say nothing about the user's run: frozen
# modules are in eval mode on purpose (the frozen trunk keeps its ImageNet BatchNorm
# statistics), and Lightning itself calls a torch API that torch has deprecated.
_EXPECTED_WARNINGS = (r".*module\(s\) in eval mode.*", r".*isinstance\(treespec, LeafSpec\).*")

log = logging.getLogger(__name__)

HISTORY_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")
SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1", "cross_entropy", "ece", "top5_accuracy")


@dataclass
class TrainResult:
    """What a training run produced; ``to_json`` is the CLI's ``--json`` line."""

    run_id: str | None
    tracking_uri: str | None
    checkpoint: str
    run_dir: str
    metrics: dict[str, float] = field(default_factory=dict)
    train_time_s: float = 0.0
    hardware: str = field(default_factory=hardware_description)
    reports: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class ProbabilityNet(nn.Module):
    """Images -> class probabilities: the form the MLflow model serves."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits, _ = self.net(images)
        return logits.softmax(dim=1)


def _resolved_config(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container["data"]["root"] = str(resolve_root(cfg.data.root))
    return container


def _precision(trainer_cfg: Mapping[str, Any]) -> str:
    precision = str(trainer_cfg["precision"])
    if precision != "auto":
        return precision
    gpu = trainer_cfg["accelerator"] in ("gpu", "cuda") or (
        trainer_cfg["accelerator"] == "auto" and torch.cuda.is_available()
    )
    return "16-mixed" if gpu else "32-true"


def run_directory(cfg: DictConfig, output_dir: Path, run_id: str | None) -> Path:
    """``paths.run_dir`` when set (a fixed place, e.g. the DVC pipeline's ``runs/<recipe>``),
    else ``<paths.output_dir>/runs/<run id>``."""
    if cfg.paths.get("run_dir"):
        return Path(cfg.paths.run_dir).resolve()
    return output_dir / "runs" / (run_id or time.strftime("local-%Y%m%d-%H%M%S"))


def _check_fresh_run_dir(run_dir: Path) -> None:
    # Lightning would write best-v1.ckpt next to an old best.ckpt, and readers of the fixed
    # location would silently get the old model: refuse instead.
    old = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    if old:
        raise ValueError(
            f"{run_dir} already holds checkpoints ({', '.join(p.name for p in old)}); remove "
            f"{run_dir / 'checkpoints'}, choose another paths.run_dir, or continue the run "
            f"with resume={old[0].parent / 'last.ckpt'}"
        )


def _find_resume(
    resume: str | None, output_dir: Path, fixed_run_dir: Path | None = None
) -> tuple[str | None, Path | None]:
    """``resume`` (run id or checkpoint path) -> (run id, last checkpoint)."""
    if not resume:
        return None, None
    path = Path(resume)
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint {path} does not exist")
        hparams = torch.load(path, map_location="cpu", weights_only=False)["hyper_parameters"]
        return hparams["config"].get("run", {}).get("id"), path
    last = (fixed_run_dir or output_dir / "runs" / resume) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(
            f"cannot resume run {resume}: {last} not found (are paths.output_dir and "
            f"paths.run_dir the same as for the interrupted run?)"
        )
    return resume, last


def initialise_from(module: FlowerClassifier, target: str, arch: str) -> str:
    """Load the network (and loss) weights of an earlier run or checkpoint into ``module``.

    Unlike ``resume``, this starts a new run with the current config (optimiser, schedule,
    trainer mode); only the weights carry over. Returns a description for the run's tags.
    """
    from flowerclf.evaluation.evaluate import resolve_checkpoint

    checkpoint, run_id = resolve_checkpoint(target)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    hparams = saved["hyper_parameters"]
    saved_arch = hparams["config"]["model"]["arch"]
    if saved_arch != arch or list(hparams["classes"]) != module.classes:
        raise ValueError(
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


def _make_logger(cfg: DictConfig, run_id: str | None) -> tuple[MLFlowLogger | None, str | None]:
    if not cfg.logger.enabled:
        return None, None
    uri = resolve_tracking_uri(cfg.logger.tracking_uri)
    run_name = cfg.logger.run_name or f"{cfg.data.name}-{cfg.model.name}-{_loss_name(cfg)}"
    logger = MLFlowLogger(
        experiment_name=cfg.logger.experiment_name,
        run_name=run_name,
        tracking_uri=uri,
        run_id=run_id,
        log_model=False,
    )
    return logger, uri


def _loss_name(cfg: DictConfig) -> str:
    return "ce" if cfg.loss.embedding == "none" else f"ce+{cfg.loss.embedding}"


def _callbacks(cfg: DictConfig, checkpoint_dir: Path) -> tuple[list[Any], ModelCheckpoint]:
    stopping = cfg.trainer.early_stopping
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best",
        monitor=stopping.monitor,
        mode=stopping.mode,
        save_last=True,
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


class _FromTrunk(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, trunk_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_from_trunk(trunk_out)


def image_runner(net: nn.Module, spec: PreprocessSpec) -> Runner:
    """Fastest way to run the whole net here: ONNX Runtime on CPU, eager on GPU."""
    if torch.cuda.is_available():
        device_net = net.to("cuda").eval()
        return lambda images: torch_runner(device_net)(images.to("cuda"))
    return make_runner(net, "onnx", spec.input_size, ["logits", "embeddings"])


def _history(logger: MLFlowLogger | None, run_id: str | None) -> dict[str, list[tuple[int, float]]]:
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


def train(cfg: DictConfig) -> TrainResult:
    """Run one training job described by a composed config."""
    started = time.perf_counter()
    config = _resolved_config(cfg)
    output_dir = Path(cfg.paths.output_dir).resolve()
    fixed_run_dir = Path(cfg.paths.run_dir).resolve() if cfg.paths.get("run_dir") else None
    resume_run, resume_ckpt = _find_resume(cfg.resume, output_dir, fixed_run_dir)
    if fixed_run_dir is not None and resume_ckpt is None:
        _check_fresh_run_dir(fixed_run_dir)
    seed_everything(int(cfg.seed))
    spec = spec_from_model_config(cfg.model)
    datamodule = FlowerDataModule.from_config(cfg, spec)
    datamodule.setup()
    if cfg.model.arch == "majority":
        from flowerclf.training.baseline import train_majority

        return train_majority(cfg, config, datamodule, output_dir, started)

    logger, tracking_uri = _make_logger(cfg, resume_run)
    run_id = logger.run_id if logger is not None else None
    run_dir = run_directory(cfg, output_dir, run_id)
    config["run"] = {"id": run_id, "dir": str(run_dir), "tracking_uri": tracking_uri}
    cached = cfg.trainer.mode == "cached"
    init_from = cfg.get("init_from")
    module = FlowerClassifier(
        config, datamodule.classes, spec.to_dict(), pretrained=not init_from,
        input_mode="trunk" if cached else "image",
    )  # fmt: skip
    if init_from:  # also when resuming: a cached trunk must be computed from these weights
        module.weights_origin = initialise_from(module, str(init_from), cfg.model.arch)
    if logger is not None and resume_run is None:
        logger.log_hyperparams(flatten({k: v for k, v in config.items() if k != "run"}))
        tags = run_tags(
            datamodule.manifest_sha256, cfg.data.name, cfg.model.name, loss=_loss_name(cfg),
            trainer=cfg.trainer.mode, weights=module.weights_origin,
        )  # fmt: skip
        for key, value in tags.items():
            logger.experiment.set_tag(run_id, key, value)

    callbacks, checkpoint_cb = _callbacks(cfg, run_dir / "checkpoints")
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=_precision(cfg.trainer),  # type: ignore[arg-type]
        max_epochs=cfg.trainer.max_epochs,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        check_val_every_n_epoch=cfg.trainer.check_val_every_n_epoch,
        deterministic=cfg.trainer.deterministic,
        limit_train_batches=cfg.trainer.limit_train_batches,
        limit_val_batches=cfg.trainer.limit_val_batches,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )

    caches = None
    cache_seconds = 0.0
    if cached:
        cache_started = time.perf_counter()
        cache_dir = (
            Path(cfg.paths.cache_dir)
            if cfg.paths.cache_dir
            else resolve_root(cfg.data.root) / "cache" / "features"
        )
        caches = build_feature_cache(
            module.net.trunk,
            datamodule,
            views=int(cfg.trainer.cache_views),
            runtime=str(cfg.trainer.feature_runtime),
            cache_dir=cache_dir,
            key_parts={
                "manifest": datamodule.manifest_sha256,
                "arch": cfg.model.arch,
                "weights": module.weights_origin,
                "tail_blocks": int(cfg.trainer.tail_blocks),
                "spec": spec.to_dict(),
                "augment": config["augment"],
                "train_splits": list(cfg.trainer.train_splits),
                "seed": int(cfg.seed),
                "runtime": cfg.trainer.feature_runtime,
            },
        )
        cache_seconds = time.perf_counter() - cache_started
        batch = int(cfg.trainer.cached_batch_size)
        train_loader = DataLoader(
            features_dataset(caches["train"]), batch_size=batch, shuffle=True,
            generator=torch.Generator().manual_seed(int(cfg.seed)),
            drop_last=len(caches["train"].labels) % batch == 1,
        )  # fmt: skip
        val_loader = DataLoader(features_dataset(caches["val"]), batch_size=batch)
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        if caches is not None:
            trainer.fit(module, train_loader, val_loader, ckpt_path=resume_ckpt)
        else:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_ckpt)

    best_path = Path(checkpoint_cb.best_model_path or checkpoint_cb.last_model_path)
    state = torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    module.to("cpu")

    module.eval()
    if caches is not None:
        batch = int(cfg.trainer.cached_batch_size)
        run = torch_runner(_FromTrunk(module.net))
        predictions = {
            name: predict_loader(
                run, DataLoader(features_dataset(caches[name]), batch_size=batch), name
            )
            for name in ("train_eval", "val", "test")
        }
    else:
        run = image_runner(module.net, spec)
        predictions = {
            name: predict_loader(run, datamodule.loader(name), name)
            for name in ("train_eval", "val", "test")
        }
        module.net.to("cpu")
    train_seconds = time.perf_counter() - started
    # Near zero when an earlier run's cache was reused: say so next to the total.
    extra_metrics = {"feature_cache_s": round(cache_seconds, 2)} if cached else {}
    return _finish_run(
        cfg, module, datamodule, predictions, logger, run_id, tracking_uri, run_dir, best_path,
        train_seconds, extra_metrics,
    )  # fmt: skip


def _write_history(history: Mapping[str, list[tuple[int, float]]], path: Path) -> None:
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


def _finish_run(
    cfg: DictConfig,
    module: FlowerClassifier,
    datamodule: FlowerDataModule,
    predictions: Mapping[str, Predictions],
    logger: MLFlowLogger | None,
    run_id: str | None,
    tracking_uri: str | None,
    run_dir: Path,
    checkpoint: Path,
    train_seconds: float,
    extra_metrics: Mapping[str, float] | None = None,
) -> TrainResult:
    """Evaluate, save embeddings, log everything to the run; return the result."""
    classes = datamodule.classes
    rows_by_id = {row.id: row for row in datamodule.rows}
    raw_dir = prepared_raw_dir(datamodule.prepared_dir)
    history = _history(logger, run_id)
    train_pred = predictions["train_eval"]
    metrics: dict[str, float] = {"train_time_s": round(train_seconds, 2), **(extra_metrics or {})}
    reports: dict[str, str] = {}
    for split in ("val", "test"):
        pred = predictions[split]
        knn = knn_accuracy(
            pred.embeddings, pred.labels, train_pred.embeddings, train_pred.labels,
            int(cfg.trainer.knn_k), len(classes),
        )  # fmt: skip
        evaluation = write_evaluation(
            pred, classes, rows_by_id, raw_dir, run_dir / "eval" / split, split=split,
            history=history, extra={"knn_accuracy": knn},
        )  # fmt: skip
        for key in (*SUMMARY_METRICS, "knn_accuracy"):
            if key in evaluation:
                metrics[f"{split}/{key}"] = float(evaluation[key])
        reports[split] = evaluation["report"]["markdown"]
    all_pred = [predictions[name] for name in ("train_eval", "val", "test")]
    embeddings_path = save_embeddings(
        run_dir / EMBEDDINGS_FILE,
        np.concatenate([p.embeddings for p in all_pred]),
        np.concatenate([p.ids for p in all_pred]),
        rows_by_id,
        classes,
    )
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(module.config)))
    hardware = hardware_description()
    # The hardware string goes to the file only (MLflow metrics are numbers): with the
    # wall-clock time it is what the README results table quotes for each row.
    (run_dir / "metrics.json").write_text(
        json.dumps({**metrics, "hardware": hardware}, indent=2) + "\n"
    )
    _write_history(history, run_dir / "history.csv")
    if logger is not None and run_id is not None:
        client = logger.experiment
        final_step = int(module.global_step)
        for key, value in metrics.items():
            client.log_metric(run_id, key, value, step=final_step)
        client.log_artifacts(run_id, str(run_dir / "eval"), "eval")
        client.log_artifact(run_id, str(embeddings_path))
        client.log_artifact(run_id, str(run_dir / "config.yaml"))
        client.log_artifact(run_id, str(checkpoint), "checkpoints")
        client.set_tag(run_id, "flowerclf.checkpoint", str(checkpoint))
        client.set_tag(run_id, "flowerclf.run_dir", str(run_dir))
        if cfg.logger.log_model:
            _log_mlflow_model(module, datamodule, tracking_uri, run_id)
    return TrainResult(
        run_id=run_id,
        tracking_uri=tracking_uri,
        checkpoint=str(checkpoint),
        run_dir=str(run_dir),
        metrics=metrics,
        train_time_s=round(train_seconds, 2),
        hardware=hardware,
        reports=reports,
    )


def _log_mlflow_model(
    module: FlowerClassifier, datamodule: FlowerDataModule, tracking_uri: str | None, run_id: str
) -> None:
    """Log the best network as an MLflow PyTorch model with signature and input example."""
    import mlflow
    import timm
    from mlflow.models import infer_signature

    spec: PreprocessSpec = module.spec
    model = ProbabilityNet(module.net).eval()
    examples = (
        datamodule.dataset("test") if datamodule.split_rows("test") else datamodule.dataset("all")
    )
    example = examples[0][0]
    example_np = example.unsqueeze(0).numpy()
    with torch.inference_mode():
        output = model(example.unsqueeze(0)).numpy()
    signature = infer_signature(example_np, output)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example_np,
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"timm=={timm.__version__}",
            ],
            metadata={"classes": list(module.classes), "preprocess": spec.to_dict()},
            # "pt2" (torch.export) would pin the batch size of the input example.
            serialization_format="pickle",
        )
