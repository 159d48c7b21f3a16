"""Safe image decoding to RGB: the one loader used by data preparation, training and inference.

Everything that turns bytes into pixels goes through :func:`decode_rgb`, so a photo looks the
same to the validator, the training loop and the deployed model. It is deliberately free of
torch so that exported model packages can use it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from flowerclf.core.errors import ImageDecodeError

# About 89 megapixels, Pillow's own default: far above any real flower photo, far below what
# it takes to exhaust memory with a "decompression bomb".
DEFAULT_MAX_PIXELS = 89_478_485

# Formats a flower photo realistically arrives in. Pillow can open more (PSD, ICNS, EPS via
# Ghostscript...), but each extra decoder is attack surface with no benefit here.
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"})
# The file name endings of those formats: how commands pick images out of a folder (the
# bytes still decide the format when a file is decoded).
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"}
)


def list_images(directory: Path) -> list[Path]:
    """Files below ``directory`` (recursively) named like a supported image, sorted."""
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus what the decoder learned about the original file."""

    image: Image.Image
    source_format: str
    source_mode: str


def convert_to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without the usual silent mistakes.

    * Alpha is composited onto white: flowers cut out on a transparent background would
      otherwise get whatever colour happens to be stored under alpha = 0.
    * 16/32-bit integer and float greyscale are rescaled: ``convert("RGB")`` clips them.
    * CMYK with an embedded ICC profile goes through colour management.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            scaled = arr / 257.0
        elif mode == "I":
            # 16-bit PNGs decode to mode "I" in some Pillow versions; deeper data is rare.
            top = 65535.0 if arr.max(initial=0) > 255 else 255.0
            scaled = arr * (255.0 / top)
        else:  # "F": assume [0, 1] floats when they fit, else min-max.
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
            scaled = (
                arr * 255.0 if lo >= 0.0 and hi <= 1.0 else (arr - lo) / max(hi - lo, 1e-12) * 255
            )
        grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    if mode == "CMYK":
        icc = img.info.get("icc_profile")
        if icc:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                dst = ImageCms.createProfile("sRGB")
                return ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
            except (ImageCms.PyCMSError, OSError):
                pass  # a broken profile is not worth rejecting the photo for
        return img.convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_rgb(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: frozenset[str] = SUPPORTED_FORMATS,
) -> DecodedImage:
    """Decode encoded image bytes into an upright 8-bit RGB image.

    The whole image is decoded (so truncation is detected here, not in the training loop),
    EXIF orientation is applied, animated images give their first frame.

    Raises:
        ImageDecodeError: empty input, unknown or unsupported format, too many pixels,
            truncated or corrupt data.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)", "empty")
    # Never let Pillow paper over truncated files with grey pixels.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # Our own limit below is the one that counts; Pillow's hard error (2x its default)
            # still applies as a backstop.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format", "unrecognised") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"too many pixels (decompression bomb guard): {exc}", "too_large"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image header: {exc}") from None

    fmt = img.format or "UNKNOWN"
    if fmt not in formats:
        raise ImageDecodeError(
            f"unsupported image format {fmt}; supported: {', '.join(sorted(formats))}",
            "unsupported",
        )
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"too many pixels: {width}x{height} = {width * height:,} > limit {max_pixels:,}",
            "too_large",
        )
    source_mode = img.mode
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        rgb = convert_to_rgb(img)
        rgb.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"truncated or corrupt image data: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"too many pixels (decompression bomb guard): {exc}", "too_large"
        ) from None
    return DecodedImage(image=rgb, source_format=fmt, source_mode=source_mode)


def load_rgb(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read a file and return its upright RGB image (see :func:`decode_rgb`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}", "unreadable") from None
    return decode_rgb(data, max_pixels=max_pixels).image
