"""The LightningModule: FlowerNet + FlowerLoss, optimiser groups, metrics, freezing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from flowerclf.config.saved import load_run_config
from flowerclf.config.schema import NO_RUN, FlowerclfConfig, RunConfig
from flowerclf.core.preprocess import PreprocessSpec
from flowerclf.models.backbones import flat_modules
from flowerclf.models.net import FlowerNet, build_net
from flowerclf.training.losses import FlowerLoss


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, min_factor: float) -> float:
    """LR multiplier: linear warm-up, then cosine decay to ``min_factor``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def _run_config(config: FlowerclfConfig | Mapping[str, Any]) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, FlowerclfConfig):
        return config.for_run(NO_RUN)  # a model built outside a training run
    return load_run_config(config)  # what a checkpoint recorded


class FlowerClassifier(L.LightningModule):
    """Trains a :class:`FlowerNet` with CE + embedding loss.

    Args:
        config: the typed config (a :class:`~flowerclf.config.schema.RunConfig` in a
            training run), or the plain dict a checkpoint recorded, read back through
            :func:`~flowerclf.config.saved.load_run_config`; ``self.config`` is always a
            ``RunConfig``. ``model``, ``loss`` and ``trainer`` are used here; checkpoints
            keep all of it, as a plain dict.
        classes: class names in label order (from the manifest).
        spec: preprocessing (saved so checkpoints are self-describing).
        pretrained: load ImageNet weights (False when restoring from a checkpoint).
        input_mode: ``image`` (images in) or ``trunk`` (cached trunk outputs in).
    """

    def __init__(
        self,
        config: FlowerclfConfig | Mapping[str, Any],
        classes: list[str],
        spec: dict[str, Any],
        pretrained: bool = True,
        input_mode: str = "image",
    ) -> None:
        super().__init__()
        self.config = _run_config(config)
        # Checkpoints hold plain values only, readable without these classes. Params go to
        # MLflow once, flattened, from train(); not again from Lightning.
        hparams = {"config": self.config.to_dict(), "classes": list(classes), "spec": dict(spec)}
        self.save_hyperparameters(hparams, logger=False)
        self.classes = list(classes)
        self.spec = PreprocessSpec.from_dict(spec)
        self.input_mode = input_mode
        model, trainer = self.config.model, self.config.trainer
        self.net: FlowerNet
        self.net, self.weights_origin = build_net(
            model,
            len(classes),
            tail_blocks=trainer.tail_blocks,
            pretrained=pretrained and model.pretrained,
        )
        self.criterion = FlowerLoss(len(classes), self.net.embedding_dim, self.config.loss)
        num_classes = len(classes)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_f1 = MulticlassF1Score(num_classes, average="macro")
        self.freeze_epochs = trainer.freeze_backbone_epochs
        self.unfreeze_every = trainer.unfreeze_every_epochs
        self.unfreeze_per_step = trainer.unfreeze_blocks_per_step

    # --- forward -------------------------------------------------------------------------

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_mode == "trunk":
            return self.net.forward_from_trunk(inputs)
        return self.net(inputs)

    # --- steps ---------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets, _ = batch
        logits, embeddings = self(inputs)
        loss = self.criterion(logits, embeddings, targets)
        batch_size = inputs.shape[0]
        # Epoch means only: one point per epoch makes the curves and the run easy to compare.
        # sync_dist: in a DDP run, the mean over every process's batches (a no-op otherwise).
        epoch_only = {
            "on_step": False, "on_epoch": True, "batch_size": batch_size, "sync_dist": True
        }  # fmt: skip
        self.log("train/loss", loss.total, prog_bar=True, **epoch_only)
        self.log("train/ce", loss.ce, **epoch_only)
        self.log("train/embedding_loss", loss.embedding, **epoch_only)
        hard = targets.argmax(dim=1) if targets.dim() == 2 else targets
        accuracy = (logits.argmax(dim=1) == hard).float().mean()
        self.log("train/acc", accuracy, prog_bar=True, **epoch_only)
        return loss.total

    def _eval_step(self, batch: Any, prefix: str) -> None:
        inputs, labels, _ = batch
        logits, embeddings = self(inputs)
        loss = self.criterion(logits, embeddings, labels)
        accuracy, f1 = (
            (self.val_acc, self.val_f1) if prefix == "val" else (self.test_acc, self.test_f1)
        )
        accuracy(logits, labels)
        f1(logits, labels)
        size = inputs.shape[0]
        # Losses are averaged over the processes of a DDP run (sync_dist); the torchmetrics
        # objects gather their counts across processes themselves.
        prog_bar = prefix == "val"
        self.log(f"{prefix}/loss", loss.total, prog_bar=prog_bar, batch_size=size, sync_dist=True)
        self.log(f"{prefix}/ce", loss.ce, batch_size=size, sync_dist=True)
        self.log(f"{prefix}/acc", accuracy, prog_bar=prog_bar, batch_size=size)
        self.log(f"{prefix}/macro_f1", f1, batch_size=size)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        inputs, labels, ids = batch
        logits, embeddings = self(inputs)
        return {
            "probabilities": logits.float().softmax(dim=1),
            "embeddings": embeddings.float(),
            "labels": labels,
            "ids": ids,
        }

    # --- freezing ------------------------------------------------------------------------

    def trainable_blocks(self, epoch: int) -> int | None:
        """How many backbone blocks (counted from the output end) train in ``epoch``.

        0: the backbone is frozen (``freeze_backbone_epochs``); None: all of it trains.
        With ``unfreeze_every_epochs`` > 0 the count grows by ``unfreeze_blocks_per_step``
        every that many epochs: gradual unfreezing, so the early, generic stages move last.
        """
        if epoch < self.freeze_epochs:
            return 0
        if self.unfreeze_every <= 0:
            return None
        steps = (epoch - self.freeze_epochs) // self.unfreeze_every + 1
        return steps * self.unfreeze_per_step

    def apply_freezing(self, epoch: int) -> None:
        """Set ``requires_grad`` and BatchNorm mode of every backbone module for ``epoch``."""

        blocks = self.trainable_blocks(epoch)
        # The part that may train: the tail when the backbone is cut, else all of it.
        part: nn.Module = self.net.tail if self.net.tail_blocks > 0 else self.net.backbone
        limit = self.net.tail_blocks if self.net.tail_blocks > 0 else None
        if blocks is not None and limit is not None:
            blocks = min(blocks, limit)
        if blocks is None or blocks == 0:
            trainable = blocks is None
            for parameter in part.parameters():
                parameter.requires_grad_(trainable)
            if not trainable:
                part.eval()  # keep BatchNorm statistics frozen too
        else:
            modules, first_block, num_blocks = flat_modules(self.net.backbone)
            cut = first_block + num_blocks - min(blocks, num_blocks)
            for index, module in enumerate(modules):
                trainable = index >= cut
                for parameter in module.parameters():
                    parameter.requires_grad_(trainable)
                if not trainable:
                    module.eval()
        if self.input_mode == "image" and self.net.tail_blocks > 0:
            # Partial fine-tuning on images: the trunk stays frozen (weights and BatchNorm
            # statistics); only the last `tail_blocks` blocks and the heads learn.
            for parameter in self.net.trunk.parameters():
                parameter.requires_grad_(False)
            self.net.trunk.eval()

    def on_train_epoch_start(self) -> None:
        self.apply_freezing(self.current_epoch)

    # --- optimisation --------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        cfg = self.config.trainer
        lr = cfg.lr
        backbone_lr = lr * cfg.backbone_lr_mult
        backbone_ids = {id(p) for p in self.net.backbone.parameters()}
        head_params = [p for p in self.parameters() if id(p) not in backbone_ids]
        groups = [
            {"params": list(self.net.backbone.parameters()), "lr": backbone_lr, "name": "backbone"},
            {"params": head_params, "lr": lr, "name": "head"},
        ]
        optimizer = self._optimizer(groups)
        if cfg.scheduler == "none":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        warmup = round(cfg.warmup_epochs * total / max(1, self.trainer.max_epochs or 1))
        min_factor = cfg.min_lr_factor
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_with_warmup(step, warmup, total, min_factor)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """``trainer.optimizer`` over the parameter groups (the schema allows only these)."""
        cfg = self.config.trainer
        if cfg.optimizer == "adam":
            return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(
            groups, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
        )
