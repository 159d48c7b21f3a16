"""FlowerNet: backbone -> (class logits, L2-normalised embedding); MemberEnsemble: several
independently trained FlowerNets as one network."""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flowerclf.config.schema import ModelConfig
from flowerclf.models.backbones import create_backbone, split_backbone


class FlowerNet(nn.Module):
    """A backbone with a classification head and an embedding head.

    The network is ``head(tail(trunk(x)))``: ``trunk`` and ``tail`` are the two halves of
    the backbone (see :func:`split_backbone`; by default the tail is empty), so the CPU
    fast path can feed cached trunk outputs to :meth:`forward_from_trunk`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int,
        *,
        embedding_dim: int,
        drop_rate: float,
        tail_blocks: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.tail_blocks = tail_blocks
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(num_features, num_classes)
        self.embedding = nn.Linear(num_features, embedding_dim)
        self._trunk, self._tail = split_backbone(backbone, tail_blocks)

    @property
    def trunk(self) -> nn.Module:
        return self._trunk

    @property
    def tail(self) -> nn.Module:
        return self._tail

    def head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(self.dropout(features))
        embedding = F.normalize(self.embedding(features), dim=1)
        return logits, embedding

    def forward_from_trunk(self, trunk_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self._tail(trunk_out))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(images))

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        # trunk/tail share the backbone's parameters; keep only the canonical names.
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if k.startswith(("_trunk.", "_tail."))]:
            del state[key]
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        own = {k: v for k, v in state_dict.items() if not k.startswith(("_trunk.", "_tail."))}
        result = super().load_state_dict(own, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(("_trunk.", "_tail."))]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"state dict does not fit FlowerNet: missing {missing[:10]}, "
                f"unexpected {result.unexpected_keys[:10]}"
            )
        return result


# The trunk/tail views of a member's backbone, as MemberEnsemble's state dict would name them.
_MEMBER_VIEW_KEY = re.compile(r"^members\.\d+\.(_trunk|_tail)\.")


class MemberEnsemble(nn.Module):
    """Several independently trained :class:`FlowerNet` s of one architecture, as one network
    (a deep ensemble): its class probabilities are the mean of the members'.

    Outputs keep FlowerNet's form, so every consumer (export, runtimes, open-set scores)
    works unchanged: the logits are the log of the mean probability (their softmax is that
    mean), and the embedding is the members' unit embeddings side by side, scaled by
    1/sqrt(members) so that it is a unit vector whose cosine similarities are the mean of the
    members'.

    Args:
        members: the member networks, each cut at ``shared_tail_blocks`` when given.
        shared_tail_blocks: members trained on one frozen trunk (the CPU fast path) differ
            only in their last ``shared_tail_blocks`` blocks: the first member's trunk then
            runs once for all (see ``model.member_tail_blocks``). None: each runs whole.
    """

    def __init__(self, members: list[FlowerNet], *, shared_tail_blocks: int | None) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs two or more members")
        self.members = nn.ModuleList(members)
        self.shared_tail_blocks = shared_tail_blocks
        self.num_classes = members[0].num_classes
        self.embedding_dim = sum(member.embedding_dim for member in members)

    def _member_outputs(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        members: list[FlowerNet] = list(self.members)  # type: ignore[arg-type]
        if self.shared_tail_blocks is None:
            return [member(images) for member in members]
        trunk_out = members[0].trunk(images)
        return [member.forward_from_trunk(trunk_out) for member in members]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self._member_outputs(images)
        log_probabilities = [F.log_softmax(logits, dim=1) for logits, _ in outputs]
        # log(mean p), computed in log space (a very confident member underflows p) with
        # elementwise ops only: OpenVINO reads ONNX ReduceLogSumExp over a stacked axis wrong.
        peak = log_probabilities[0]
        for member in log_probabilities[1:]:
            peak = torch.maximum(peak, member)
        total = sum(torch.exp(member - peak) for member in log_probabilities)
        logits = peak + torch.log(total) - math.log(len(outputs))  # type: ignore[arg-type]
        embedding = torch.cat([emb for _, emb in outputs], dim=1) / math.sqrt(len(outputs))
        return logits, embedding

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        # As FlowerNet: the trunk/tail views share the backbones' tensors; keep one name each.
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if _MEMBER_VIEW_KEY.match(k)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        own = {k: v for k, v in state_dict.items() if not _MEMBER_VIEW_KEY.match(k)}
        result = super().load_state_dict(own, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not _MEMBER_VIEW_KEY.match(k)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"state dict does not fit MemberEnsemble: missing {missing[:10]}, "
                f"unexpected {result.unexpected_keys[:10]}"
            )
        return result


def build_net(
    model: ModelConfig, num_classes: int, *, tail_blocks: int = 0, pretrained: bool | None = None
) -> tuple[FlowerNet | MemberEnsemble, str]:
    """Build the network the typed ``model`` config section describes: a :class:`FlowerNet`,
    or with ``model.members`` > 1 a :class:`MemberEnsemble` of them (never trained as one:
    its members train in runs of their own, see :mod:`flowerclf.training.members`).

    Args:
        tail_blocks: backbone blocks on the tail side of the cut (``trainer.tail_blocks``);
            0 leaves the backbone whole, which is all inference needs. An ensemble's members
            are cut at ``model.member_tail_blocks`` instead.
        pretrained: override ``model.pretrained`` (False when weights will be loaded from
            a checkpoint or package anyway).

    Returns:
        The network and where its backbone weights came from.
    """
    if model.members > 1:
        shared = model.member_tail_blocks
        single = model.updated(members=1, member_tail_blocks=None)
        built = [
            build_net(single, num_classes, tail_blocks=shared or 0, pretrained=pretrained)
            for _ in range(model.members)
        ]
        nets = [net for net, _ in built]
        return MemberEnsemble(nets, shared_tail_blocks=shared), built[0][1]  # type: ignore[arg-type]
    use_pretrained = model.pretrained if pretrained is None else pretrained
    backbone, origin = create_backbone(model.arch, pretrained=use_pretrained, weights=model.weights)
    net = FlowerNet(
        backbone,
        num_features=int(backbone.num_features),  # type: ignore[arg-type]
        num_classes=num_classes,
        embedding_dim=model.embedding_dim,
        drop_rate=model.drop_rate,
        tail_blocks=tail_blocks,
    )
    return net, origin
