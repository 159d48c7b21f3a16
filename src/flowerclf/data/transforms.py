"""Training and evaluation transforms, derived from the model's :class:`PreprocessSpec`.

Training uses timm's ``create_transform`` (RandomResizedCrop, flips, colour jitter,
RandAugment, random erasing) plus optional Gaussian noise and blur; MixUp/CutMix are batch-level and
come from timm's ``Mixup``. Evaluation uses :func:`flowerclf.core.preprocess.preprocess_eval`,
the same function every deployed runtime uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from PIL import Image, ImageFilter

from flowerclf.core.preprocess import PreprocessSpec, preprocess_eval


class AugmentSettings(Protocol):
    """The ``augment`` config section (:class:`flowerclf.config.schema.AugmentConfig`).

    Declared here because the data layer sits below the config layer; the typed section
    satisfies it as it is. Its values, defaults included, come from the config.
    """

    @property
    def hflip(self) -> float: ...
    @property
    def vflip(self) -> float: ...
    @property
    def scale(self) -> tuple[float, float]: ...
    @property
    def ratio(self) -> tuple[float, float]: ...
    @property
    def color_jitter(self) -> float: ...
    @property
    def rand_augment(self) -> str | None: ...
    @property
    def gaussian_noise_std(self) -> float: ...
    @property
    def blur_prob(self) -> float: ...
    @property
    def blur_radius(self) -> tuple[float, float]: ...
    @property
    def random_erasing(self) -> float: ...
    @property
    def mixup_alpha(self) -> float: ...
    @property
    def cutmix_alpha(self) -> float: ...
    @property
    def mix_prob(self) -> float: ...
    @property
    def mix_switch_prob(self) -> float: ...


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


class RandomGaussianBlur:
    """Blur the decoded photo with probability ``p``, radius uniform in ``radius`` pixels.

    Applied before cropping and resizing, on the photo as decoded, like the blur that
    ``flowerclf evaluate --robustness`` measures (out-of-focus and shaken photos), so the
    model sees soft images in training rather than only sharp ones.
    """

    def __init__(self, p: float, radius: tuple[float, float]) -> None:
        self.p, self.radius = float(p), (float(radius[0]), float(radius[1]))

    def __call__(self, image: Image.Image) -> Image.Image:
        if torch.rand(()) >= self.p:  # torch's generator: seeded per worker and epoch
            return image
        low, high = self.radius
        radius = low + (high - low) * float(torch.rand(()))
        return image.filter(ImageFilter.GaussianBlur(radius))

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(p={self.p}, radius={self.radius})"


def build_train_transform(
    spec: PreprocessSpec, augment: AugmentSettings
) -> Callable[[Image.Image], torch.Tensor]:
    """timm training transform for ``spec`` with the switches in ``augment``."""
    from timm.data import create_transform
    from torchvision import transforms

    transform = create_transform(
        input_size=spec.input_size,
        is_training=True,
        scale=tuple(augment.scale),
        ratio=tuple(augment.ratio),
        hflip=augment.hflip,
        vflip=augment.vflip,
        color_jitter=augment.color_jitter,
        auto_augment=augment.rand_augment,
        interpolation=spec.interpolation,
        mean=spec.mean,
        std=spec.std,
        re_prob=augment.random_erasing,
    )
    if augment.gaussian_noise_std > 0:
        transform = transforms.Compose([transform, AddGaussianNoise(augment.gaussian_noise_std)])
    if augment.blur_prob > 0:
        blur = RandomGaussianBlur(augment.blur_prob, tuple(augment.blur_radius))  # type: ignore[arg-type]
        transform = transforms.Compose([blur, transform])
    return transform  # type: ignore[no-any-return]


def build_mixup(
    augment: AugmentSettings, num_classes: int, label_smoothing: float
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """timm ``Mixup`` for MixUp and/or CutMix, or ``None`` when both are off.

    With MixUp/CutMix the targets become soft (one row of class probabilities per image).
    """
    if augment.mixup_alpha <= 0 and augment.cutmix_alpha <= 0:
        return None
    from timm.data import Mixup

    return Mixup(  # type: ignore[no-any-return]
        mixup_alpha=augment.mixup_alpha,
        cutmix_alpha=augment.cutmix_alpha,
        prob=augment.mix_prob,
        switch_prob=augment.mix_switch_prob,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )
