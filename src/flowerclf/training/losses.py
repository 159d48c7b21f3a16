"""Classification loss plus an optional embedding loss.

``total = CE(logits, y) + weight * embedding_loss(embeddings, y)`` where the embedding loss
is one of:

* ``cosine``: :class:`torch.nn.CosineEmbeddingLoss` over all in-batch pairs, target +1 for
  pairs of the same class and -1 otherwise (the seeds' "CrossEntropy + CosineEmbeddingLoss");
* ``supcon``: supervised contrastive loss (Khosla et al., 2020);
* ``siglip``: SigLIP-style pairwise sigmoid loss between image embeddings and learnable
  class embeddings (Zhai et al., 2023): every (image, class) pair is a binary problem.

Targets may be soft (MixUp/CutMix); embedding losses then use the dominant class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flowerclf.config.schema import LossConfig


@dataclass(frozen=True)
class LossOutput:
    total: torch.Tensor
    ce: torch.Tensor
    embedding: torch.Tensor


def cosine_pair_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean CosineEmbeddingLoss over all distinct in-batch pairs."""
    n = embeddings.shape[0]
    first, second = torch.triu_indices(n, n, offset=1, device=embeddings.device)
    if first.numel() == 0:
        return embeddings.sum() * 0.0
    target = torch.where(labels[first] == labels[second], 1.0, -1.0).to(embeddings.dtype)
    return F.cosine_embedding_loss(
        embeddings[first], embeddings[second], target, margin=margin, reduction="mean"
    )


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss on L2-normalised embeddings.

    Anchors without a positive in the batch are skipped.
    """
    n = embeddings.shape[0]
    logits = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    valid = counts > 0
    if not valid.any():
        return embeddings.sum() * 0.0
    positive_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(positive_log_prob[valid] / counts[valid]).mean()


class SigLIPClassLoss(nn.Module):
    """Pairwise sigmoid loss between image embeddings and learnable class embeddings."""

    def __init__(self, num_classes: int, embedding_dim: int, init_scale: float = 10.0) -> None:
        super().__init__()
        self.class_embeddings = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.02)
        self.log_scale = nn.Parameter(torch.tensor(float(init_scale)).log())
        self.bias = nn.Parameter(torch.tensor(-10.0 / max(num_classes, 2) ** 0.5))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes = F.normalize(self.class_embeddings, dim=1)
        logits = embeddings @ classes.T * self.log_scale.exp() + self.bias
        signs = 2 * F.one_hot(labels, classes.shape[0]).to(logits.dtype) - 1
        # Sum over classes, mean over images, as in SigLIP.
        return -F.logsigmoid(signs * logits).sum(dim=1).mean()


class FlowerLoss(nn.Module):
    """CrossEntropy (optionally label-smoothed) plus a weighted embedding loss.

    Args:
        num_classes: number of classes (SigLIP learns one embedding per class).
        embedding_dim: size of the image embeddings.
        config: the typed ``loss`` section (the embedding loss is one of the validated
            names, so every one of them has a branch in :meth:`forward`).
    """

    def __init__(self, num_classes: int, embedding_dim: int, config: LossConfig) -> None:
        super().__init__()
        self.config = config
        self.siglip = (
            SigLIPClassLoss(num_classes, embedding_dim) if config.embedding == "siglip" else None
        )

    def forward(
        self, logits: torch.Tensor, embeddings: torch.Tensor, targets: torch.Tensor
    ) -> LossOutput:
        if targets.dim() == 2:  # soft targets from MixUp/CutMix (smoothing already applied)
            ce = torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
            hard = targets.argmax(dim=1)
        else:
            ce = F.cross_entropy(logits, targets, label_smoothing=self.config.label_smoothing)
            hard = targets
        config = self.config
        if config.embedding == "none" or config.embedding_weight == 0:
            extra = logits.new_zeros(())
        elif config.embedding == "cosine":
            extra = cosine_pair_loss(embeddings, hard, config.cosine_margin)
        elif config.embedding == "supcon":
            extra = supcon_loss(embeddings, hard, config.temperature)
        else:
            assert self.siglip is not None  # built in __init__ for embedding == "siglip"
            extra = self.siglip(embeddings, hard)
        return LossOutput(ce + config.embedding_weight * extra, ce, extra)
