"""Training and evaluation transforms, derived from the model's :class:`PreprocessSpec`.

Training uses timm's ``create_transform`` (RandomResizedCrop, flips, colour jitter,
RandAugment, random erasing) plus optional Gaussian noise; MixUp/CutMix are batch-level and
come from timm's ``Mixup``. Evaluation uses :func:`flowerclf.core.preprocess.preprocess_eval`,
the same function every deployed runtime uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from PIL import Image

from flowerclf.core.preprocess import PreprocessSpec, preprocess_eval


class EvalTransform:
    """PIL image -> normalised float tensor (3, S, S); picklable for DataLoader workers."""

    def __init__(self, spec: PreprocessSpec) -> None:
        self.spec = spec

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(preprocess_eval(image, self.spec))

    def __repr__(self) -> str:
        return f"EvalTransform({self.spec})"


class AddGaussianNoise:
    """Add zero-mean Gaussian noise with standard deviation ``std`` to a tensor."""

    def __init__(self, std: float) -> None:
        self.std = float(std)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor + torch.randn_like(tensor) * self.std

    def __repr__(self) -> str:
        return f"AddGaussianNoise(std={self.std})"


def build_train_transform(
    spec: PreprocessSpec, augment: Mapping[str, Any]
) -> Callable[[Image.Image], torch.Tensor]:
    """timm training transform for ``spec`` with the switches in ``augment``."""
    from timm.data import create_transform
    from torchvision import transforms

    transform = create_transform(
        input_size=spec.input_size,
        is_training=True,
        scale=tuple(augment.get("scale", (0.08, 1.0))),
        ratio=tuple(augment.get("ratio", (0.75, 4 / 3))),
        hflip=float(augment.get("hflip", 0.5)),
        vflip=float(augment.get("vflip", 0.0)),
        color_jitter=float(augment.get("color_jitter", 0.0)),
        auto_augment=augment.get("rand_augment"),
        interpolation=spec.interpolation,
        mean=spec.mean,
        std=spec.std,
        re_prob=float(augment.get("random_erasing", 0.0)),
    )
    noise = float(augment.get("gaussian_noise_std", 0.0))
    if noise > 0:
        transform = transforms.Compose([transform, AddGaussianNoise(noise)])
    return transform  # type: ignore[no-any-return]


def build_mixup(
    augment: Mapping[str, Any], num_classes: int, label_smoothing: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """timm ``Mixup`` for MixUp and/or CutMix, or ``None`` when both are off.

    With MixUp/CutMix the targets become soft (one row of class probabilities per image).
    """
    mixup_alpha = float(augment.get("mixup_alpha", 0.0))
    cutmix_alpha = float(augment.get("cutmix_alpha", 0.0))
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    from timm.data import Mixup

    return Mixup(  # type: ignore[no-any-return]
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        prob=float(augment.get("mix_prob", 1.0)),
        switch_prob=float(augment.get("mix_switch_prob", 0.5)),
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )
