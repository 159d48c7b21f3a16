"""The preprocessing spec: one description of how pixels become model input.

It is resolved once from the backbone's timm pretrained config (plus explicit overrides in
the model config), stored with every trained and exported model, and read back by every
runtime. :func:`preprocess_eval` is a torch-free implementation of the evaluation transform
(resize shorter side, centre crop, normalise) that matches timm's ``create_transform``
output for the same spec; a test holds the two together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class PreprocessSpec:
    """Evaluation preprocessing. ``input_size`` is the square side fed to the network."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation {self.interpolation!r} is not supported; "
                f"valid: {sorted(INTERPOLATIONS)}"
            )
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.input_size < 8:
            raise ValueError(f"input_size must be >= 8, got {self.input_size}")

    @property
    def resize_size(self) -> int:
        """Shorter-side size before the centre crop (timm's rule)."""
        return math.floor(self.input_size / self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["resize_size"] = self.resize_size
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        return cls(
            input_size=int(data["input_size"]),
            mean=_triple(data["mean"]),
            std=_triple(data["std"]),
            interpolation=str(data.get("interpolation", "bicubic")),
            crop_pct=float(data.get("crop_pct", 0.875)),
        )

    def timm_data_config(self) -> dict[str, Any]:
        """The same spec in the form timm's ``create_transform`` takes."""
        return {
            "input_size": (3, self.input_size, self.input_size),
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
        }


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    items = tuple(float(v) for v in values)
    if len(items) != 3:
        raise ValueError(f"expected 3 values (one per RGB channel), got {list(values)}")
    return items  # type: ignore[return-value]


# Elongation beyond which the long side is cut before resizing (see bound_aspect).
MAX_ASPECT_RATIO = 4.0


def bound_aspect(image: Image.Image, max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Crop the long side of very elongated images to ``max_ratio`` around the centre.

    Preprocessing resizes the *shorter* side to about the input size, so a 1 x 200,000 PNG
    (a few hundred bytes, far under any pixel limit) would become 256 x 51,200,000 pixels
    before the centre crop. The crop only ever keeps the middle ``crop_pct`` of the short
    side's length, so cutting the long side to ``max_ratio`` x the short side first gives
    the same model input (up to resampling at the cut) at a bounded cost. Ordinary photos
    (up to 4:1) are untouched, so they match timm's transform exactly.
    """
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if long <= short * max_ratio:
        return image
    keep = max(1, int(short * max_ratio))
    start = (long - keep) // 2
    box = (start, 0, start + keep, height) if width > height else (0, start, width, start + keep)
    return image.crop(box)


def preprocess_eval(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize the shorter side, centre crop and normalise: float32 array ``(3, S, S)``.

    Mirrors torchvision's ``Resize(int) -> CenterCrop -> ToTensor -> Normalize`` on PIL
    images, as timm builds it for ``crop_mode="center"`` (after :func:`bound_aspect`).
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    image = bound_aspect(image)
    width, height = image.size
    short = spec.resize_size
    # torchvision keeps the aspect ratio and truncates the long side.
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), INTERPOLATIONS[spec.interpolation])
    size = spec.input_size
    # torchvision's centre-crop rounding
    top = round((new_h - size) / 2.0)
    left = round((new_w - size) / 2.0)
    if top < 0 or left < 0:  # tiny images: pad like torchvision (zeros) before cropping
        padded = Image.new("RGB", (max(new_w, size), max(new_h, size)))
        padded.paste(image, ((max(size - new_w, 0)) // 2, (max(size - new_h, 0)) // 2))
        image, new_w, new_h = padded, padded.width, padded.height
        top = round((new_h - size) / 2.0)
        left = round((new_w - size) / 2.0)
    image = image.crop((left, top, left + size, top + size))
    return normalise(np.asarray(image), spec.mean, spec.std)


@lru_cache(maxsize=16)
def _normalisation_table(
    mean: tuple[float, float, float], std: tuple[float, float, float]
) -> np.ndarray:
    """``(3, 256)`` float32: each channel's normalised value of every byte, computed with
    the same float32 operations as normalising the pixels one by one (so it is exact)."""
    values = np.arange(256, dtype=np.float32)[None, :] / 255.0
    return (values - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


def normalise(
    pixels: np.ndarray, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> np.ndarray:
    """``HxWx3`` uint8 -> ``(3, H, W)`` float32 ``(pixels / 255 - mean) / std``.

    A table lookup per channel, written straight into the channel-first result: 2-3x
    faster than the float arithmetic on every pixel, with identical values. Indexing with
    the uint8 plane directly (not ``np.take``, which first copies the indices to intp) is
    4-5x faster again: 0.24 vs 1.15 ms for a 224 px image here.
    """
    table = _normalisation_table(mean, std)
    out = np.empty((3, pixels.shape[0], pixels.shape[1]), np.float32)
    planes = pixels.transpose(2, 0, 1)
    for channel in range(3):
        out[channel] = table[channel][planes[channel]]
    return out
