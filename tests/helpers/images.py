"""Small generated photos: distinct per seed, with structure a CNN can learn."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def make_photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A small RGB image with structure (gradients + a blob), distinct per seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 255, size=3)
    img = np.stack(
        [
            (base[0] + xx * 3) % 256,
            (base[1] + yy * 5) % 256,
            (base[2] + (xx + yy) * 2) % 256,
        ],
        axis=-1,
    ).astype(np.uint8)
    cy, cx = rng.integers(0, height), rng.integers(0, width)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(size) // 4) ** 2] = rng.integers(0, 255, size=3)
    return Image.fromarray(img, "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def build_folder_dataset(
    root: Path, per_class: int = 12, classes: tuple[str, ...] = ("a", "b", "c")
) -> Path:
    """Write ``root/<class>/<n>.jpg`` with distinct images; returns ``root``."""
    for class_index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            seed = class_index * 1000 + i
            (folder / f"img_{i:03d}.jpg").write_bytes(encode(make_photo((40 + i, 32), seed)))
    return root
