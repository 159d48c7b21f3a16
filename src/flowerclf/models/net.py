"""FlowerNet: backbone -> (class logits, L2-normalised embedding)."""

from __future__ import annotations

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


def build_net(
    model: ModelConfig, num_classes: int, *, tail_blocks: int = 0, pretrained: bool | None = None
) -> tuple[FlowerNet, str]:
    """Build a :class:`FlowerNet` from the typed ``model`` config section.

    Args:
        tail_blocks: backbone blocks on the tail side of the cut (``trainer.tail_blocks``);
            0 leaves the backbone whole, which is all inference needs.
        pretrained: override ``model.pretrained`` (False when weights will be loaded from
            a checkpoint or package anyway).

    Returns:
        The network and where its backbone weights came from.
    """
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
