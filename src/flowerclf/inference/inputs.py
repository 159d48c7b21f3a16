"""Turn whatever a user passes (path, bytes, PIL image, NumPy array) into an RGB image."""

from __future__ import annotations

import os
from typing import Any, TypeAlias

import numpy as np
from PIL import Image

from flowerclf.core.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    convert_to_rgb,
    decode_rgb,
    load_rgb,
)

ImageInput: TypeAlias = (
    str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray
)


def is_single_input(x: Any) -> bool:
    """True for one image; lists and tuples are batches (a 4-D array is a batch too)."""
    if isinstance(x, np.ndarray):
        return x.ndim in (2, 3)
    return not isinstance(x, (list, tuple))


def to_rgb(
    x: ImageInput,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_short_side: int | None = None,
) -> Image.Image:
    """One input -> upright 8-bit RGB PIL image.

    Arrays are pixels in ``HxW`` (grey) or ``HxWxC`` (C = 1, 3 or 4, RGB order): uint8, or
    floats in [0, 1]. Encoded inputs (paths, bytes) may be shrunk while decoding when
    ``target_short_side`` is given (see :func:`flowerclf.core.imaging.decode_rgb`); images
    and arrays are already in memory and are converted as they are.

    Raises:
        ImageDecodeError: unreadable file, undecodable bytes, unsupported array.
        TypeError: an input type that is not an image.
    """
    if isinstance(x, (str, os.PathLike)):
        return load_rgb(x, max_pixels=max_pixels, target_short_side=target_short_side)
    if isinstance(x, (bytes, bytearray, memoryview)):
        decoded = decode_rgb(bytes(x), max_pixels=max_pixels, target_short_side=target_short_side)
        return decoded.image
    if isinstance(x, Image.Image):
        if x.width * x.height > max_pixels:
            raise ImageDecodeError(
                f"too many pixels: {x.width}x{x.height} > limit {max_pixels:,}", "too_large"
            )
        return convert_to_rgb(x)
    if isinstance(x, np.ndarray):
        return _array_to_rgb(x, max_pixels)
    raise TypeError(
        f"cannot read an image from {type(x).__name__}; pass a path, bytes, a PIL image or an "
        "HxWxC NumPy array"
    )


def _array_to_rgb(array: np.ndarray, max_pixels: int) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageDecodeError(
            f"array of shape {array.shape} is not an image; expected HxW or HxWxC with C in 1, 3, 4"
        )
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ImageDecodeError(f"too many pixels: {array.shape[1]}x{array.shape[0]}", "too_large")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ImageDecodeError(f"array dtype {array.dtype} unsupported; use uint8 or float")
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1):
            raise ImageDecodeError("float arrays must hold values in [0, 1]")
        array = np.rint(np.nan_to_num(array) * 255).astype(np.uint8)
    # uint8 HxW / HxWx3 / HxWx4 arrays map to L / RGB / RGBA.
    return convert_to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def describe(x: Any) -> str:
    """A short label for an input in error messages and JSON lines."""
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    if isinstance(x, (bytes, bytearray, memoryview)):
        return f"<{len(x)} bytes>"
    if isinstance(x, Image.Image):
        return f"<PIL image {x.width}x{x.height}>"
    if isinstance(x, np.ndarray):
        return f"<array {x.shape}>"
    return f"<{type(x).__name__}>"
