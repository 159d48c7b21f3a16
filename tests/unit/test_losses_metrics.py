"""Losses, metrics, kNN and the LR schedule, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowerclf.config import compose_config
from flowerclf.config.schema import LossConfig, validate_section
from flowerclf.metrics.classification import classification_metrics, expected_calibration_error
from flowerclf.metrics.embeddings import knn_accuracy
from flowerclf.training.losses import FlowerLoss, cosine_pair_loss, supcon_loss
from flowerclf.training.module import cosine_with_warmup


def test_cosine_pair_loss_matches_torch_on_explicit_pairs() -> None:
    emb = F.normalize(torch.randn(4, 8), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    a = torch.stack([emb[i] for i, _ in pairs])
    b = torch.stack([emb[j] for _, j in pairs])
    target = torch.tensor([1.0 if labels[i] == labels[j] else -1.0 for i, j in pairs])
    expected = torch.nn.CosineEmbeddingLoss(margin=0.1)(a, b, target)
    torch.testing.assert_close(cosine_pair_loss(emb, labels, margin=0.1), expected)


def test_supcon_prefers_clustered_embeddings() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    clustered = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    mixed = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]]), dim=1)
    assert supcon_loss(clustered, labels, 0.1) < supcon_loss(mixed, labels, 0.1)
    # No positives in the batch: defined, zero, differentiable.
    assert supcon_loss(clustered[:2], torch.tensor([0, 1]), 0.1).item() == 0.0


def _loss_config(**changes: object) -> LossConfig:
    return compose_config().loss.updated(**changes)


@pytest.mark.parametrize("embedding", ["none", "cosine", "supcon", "siglip"])
def test_every_loss_is_finite_and_trains_the_embeddings(embedding: str) -> None:
    torch.manual_seed(0)
    config = _loss_config(embedding=embedding, embedding_weight=0.5, label_smoothing=0.1)
    loss_fn = FlowerLoss(3, 16, config)
    features = torch.randn(8, 16, requires_grad=True)
    logits = torch.randn(8, 3, requires_grad=True)
    out = loss_fn(logits, F.normalize(features, dim=1), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    assert torch.isfinite(out.total)
    out.total.backward()
    assert logits.grad is not None
    if embedding == "none":
        assert features.grad is None or float(features.grad.abs().sum()) == 0.0
    else:
        assert float(features.grad.abs().sum()) > 0
    if embedding == "siglip":
        assert loss_fn.siglip is not None and loss_fn.siglip.class_embeddings.grad is not None


def test_soft_targets_from_mixup() -> None:
    loss_fn = FlowerLoss(3, 4, _loss_config(embedding="cosine", embedding_weight=1.0))
    logits = torch.zeros(2, 3)
    targets = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    out = loss_fn(logits, F.normalize(torch.randn(2, 4), dim=1), targets)
    torch.testing.assert_close(out.ce, torch.tensor(math.log(3)))


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="valid: \\['none', 'cosine', 'supcon', 'siglip'\\]"):
        validate_section("loss", {**compose_config().loss.to_dict(), "embedding": "triplet"})


def test_metrics_on_a_hand_made_case() -> None:
    classes = ["a", "b"]
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    labels = np.array([0, 1, 1, 0])  # predictions: a, a, b, a -> 3/4 correct
    m = classification_metrics(probabilities, labels, classes)
    assert m["accuracy"] == 0.75
    # class a: P = 2/3, R = 1, F1 = 0.8; class b: P = 1, R = 0.5, F1 = 2/3
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    expected_ce = -np.mean(np.log([0.9, 0.4, 0.8, 0.7]))
    assert m["cross_entropy"] == pytest.approx(expected_ce)
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    assert "top5_accuracy" not in m


def test_ece() -> None:
    probabilities = np.array([[0.9, 0.1]] * 10)
    labels = np.array([0] * 9 + [1])  # 90 % confident, 90 % right: perfectly calibrated
    ece, table = expected_calibration_error(probabilities, labels)
    assert ece == pytest.approx(0.0, abs=1e-9)
    assert sum(row["count"] for row in table) == 10
    overconfident, _ = expected_calibration_error(np.array([[0.99, 0.01]] * 2), np.array([0, 1]))
    assert overconfident == pytest.approx(0.49)


def test_top5_for_many_classes() -> None:
    probabilities = np.eye(10)[[1, 2, 3]] * 0.5 + 0.05
    m = classification_metrics(probabilities, np.array([1, 2, 9]), [str(i) for i in range(10)])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert "top5_accuracy" in m


def test_knn_accuracy() -> None:
    reference = F.normalize(
        torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1
    ).numpy()
    labels = np.array([0, 0, 1, 1])
    query = F.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0]]), dim=1).numpy()
    assert knn_accuracy(query, np.array([0, 1]), reference, labels, k=3, num_classes=2) == 1.0
    assert knn_accuracy(query, np.array([1, 0]), reference, labels, k=3, num_classes=2) == 0.0


def test_cosine_schedule_with_warmup() -> None:
    assert cosine_with_warmup(0, 10, 100, 0.0) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 10, 100, 0.0) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 10, 100, 0.0) == pytest.approx(0.5)
    assert cosine_with_warmup(100, 10, 100, 0.01) == pytest.approx(0.01)
