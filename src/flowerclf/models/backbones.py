"""Backbones: timm models (plus a small CNN baseline), and how to cut them in two.

Every backbone maps an image batch to pooled features ``(N, num_features)``. For the CPU
fast path a backbone is cut into a frozen *trunk* and a trainable *tail* such that
``tail(trunk(x)) == backbone(x)``; the trunk's outputs can then be computed once and cached.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from flowerclf.core.errors import ConfigError
from flowerclf.models.weights import load_pretrained_backbone

log = logging.getLogger(__name__)


class SimpleCNN(nn.Module):
    """Four conv-BN-ReLU stages with pooling, global average pooling at the end.

    Narrow on purpose: it is a from-scratch baseline that must train on a 2-core CPU.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            channels = width
        self.blocks = nn.Sequential(*layers)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_pool(self.blocks(x))


def create_backbone(arch: str, *, pretrained: bool, weights: str | None) -> tuple[nn.Module, str]:
    """Create ``arch`` without its classifier (forward gives pooled features).

    Returns:
        The backbone and a description of its initial weights.
    """
    if arch == "simple_cnn":
        if pretrained:
            raise ConfigError("simple_cnn has no pretrained weights; set model.pretrained=false")
        return SimpleCNN(), "random"
    import timm

    try:
        model = timm.create_model(arch, pretrained=False)
    except RuntimeError as exc:
        raise ConfigError(f"unknown timm architecture {arch!r}: {exc}") from None
    origin = "random"
    if pretrained:
        origin = load_pretrained_backbone(model, arch, weights)
    model.reset_classifier(0)
    return model, origin


def flat_modules(backbone: nn.Module) -> tuple[list[nn.Module], int, int]:
    """The backbone as a flat list of modules applied in order, and which of them are the
    repeated blocks (``first_block``, ``num_blocks``) that a tail may take."""
    names = {type(backbone).__name__}
    if isinstance(backbone, SimpleCNN):
        blocks = list(backbone.blocks)
        return [*blocks, backbone.global_pool], 0, len(blocks)
    if "EfficientNet" in names:
        blocks = [block for stage in backbone.blocks for block in stage]  # type: ignore[union-attr]
        stem = [backbone.conv_stem, backbone.bn1]
        head = [backbone.conv_head, backbone.bn2, backbone.global_pool]
        return [*stem, *blocks, *head], len(stem), len(blocks)  # type: ignore[list-item]
    if "RexNet" in names:
        blocks = list(backbone.features)  # type: ignore[arg-type]
        # features[-1] is the 1x1 head conv; keep it with the tail side.
        return [backbone.stem, *blocks, backbone.head.global_pool], 1, len(blocks) - 1  # type: ignore[union-attr, list-item]
    if "ResNet" in names:
        stem = [backbone.conv1, backbone.bn1, backbone.act1, backbone.maxpool]
        blocks = [
            b
            for layer in ("layer1", "layer2", "layer3", "layer4")
            for b in getattr(backbone, layer)
        ]
        return [*stem, *blocks, backbone.global_pool], len(stem), len(blocks)  # type: ignore[list-item]
    raise NotImplementedError(f"cutting {type(backbone).__name__} into trunk and tail")


def split_backbone(backbone: nn.Module, tail_blocks: int) -> tuple[nn.Module, nn.Module]:
    """Cut ``backbone`` so that ``tail`` holds its last ``tail_blocks`` blocks and head.

    ``tail_blocks=0`` puts the whole backbone in the trunk (cached features are the pooled
    vectors). Both parts share parameters with ``backbone``.
    """
    if tail_blocks == 0:
        return backbone, nn.Identity()
    modules, first_block, num_blocks = flat_modules(backbone)
    if not 0 < tail_blocks <= num_blocks:
        raise ConfigError(
            f"trainer.tail_blocks={tail_blocks} but {type(backbone).__name__} has "
            f"{num_blocks} blocks; choose 0..{num_blocks}"
        )
    cut = first_block + num_blocks - tail_blocks
    return nn.Sequential(*modules[:cut]), nn.Sequential(*modules[cut:])
