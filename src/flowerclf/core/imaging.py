"""Safe image decoding to RGB: the one loader used by data preparation, training and inference.

Everything that turns bytes into pixels goes through :func:`decode_rgb`, so a photo looks the
same to the validator, the training loop, the deployed model and Triton's preprocessing step.
It needs only NumPy and Pillow (the Triton export ships this module as it is).

Memory stays bounded by the pixel limit, never by what a file claims or how it is encoded:

* the pixel count is checked from the header before any pixel is decoded;
* a caller that will shrink the image anyway (inference) passes ``target_short_side`` and the
  decoder shrinks while decoding: JPEG's DCT scaling (``Image.draft``), then ``Image.reduce``;
* 16-bit and float images become 8-bit in strips, never as one full-size float64 array;
* a process-wide :class:`DecodeBudget` bounds the pixels being decoded at once and the
  number of concurrent decodes, so N parallel requests cannot each hold a full-size image.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

# Relative on purpose: the Triton export ships errors.py, imaging.py and preprocess.py as
# they are in a package of another name (see export/triton.py), so this is the one import
# in core that must not spell out "flowerclf".
from .errors import ImageDecodeError

log = logging.getLogger(__name__)

# 50 megapixels: a full-resolution 48 MP phone photo still passes, while a crafted file can
# make a decode cost at most ~50 MP x 8 bytes. Classification needs a few hundred pixels a
# side, so nothing is lost by refusing more. Every caller can pass its own ``max_pixels``.
DEFAULT_MAX_PIXELS = 50_000_000

# Formats a flower photo realistically arrives in. Pillow can open more (PSD, ICNS, EPS via
# Ghostscript...), but each extra decoder is attack surface with no benefit here.
SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"})
# The file name endings of those formats: how commands pick images out of a folder (the
# bytes still decide the format when a file is decoded).
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"}
)

# Shrinking by an integer factor (box filter) is only allowed down to this multiple of the
# size the caller resizes to: the final antialiased resize then still averages >= 2x2 source
# pixels per output pixel, which is what Pillow's own ``thumbnail(reducing_gap=2.0)`` does.
REDUCING_GAP = 2.0
# JPEG DCT scaling (1/2, 1/4, 1/8) low-pass filters in the frequency domain, unlike a box
# filter, so it may go down to the resize size itself: a 12 MP photo decodes at 1/8 scale
# (4000x3000 -> 500x375) instead of 1/4. Measured against full decoding with the tf_flowers
# package (scripts/decode_agreement.py, the 367 test photos enlarged 4x to ~1.25 MP JPEGs):
# top-1 agreement 99.7 % (one photo changed; accuracy 92.9 % vs 92.6 %), decode + preprocess
# 2.1x faster than full decoding and 1.5x faster than stopping at 2x the resize size. The
# integration tests hold the agreement at >= 99.5 %.
DCT_REDUCING_GAP = 1.0
# Pixels converted per strip when a 16-bit or float image becomes 8-bit (8 MB of float64).
STRIP_PIXELS = 1 << 20
# Process-wide defaults for DecodeBudget: two full-size decodes, or four smaller ones.
DEFAULT_PIXELS_IN_FLIGHT = 2 * DEFAULT_MAX_PIXELS
DEFAULT_CONCURRENT_DECODES = 4

_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_REDUCIBLE_MODES = frozenset({"L", "RGB", "RGBA", "LA", "CMYK"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the pixels upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})


def list_images(directory: Path) -> list[Path]:
    """Files below ``directory`` (recursively) named like a supported image, sorted."""
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus what the decoder learned about the original file.

    ``original_size`` is the upright (width, height) of the file's full-resolution pixels;
    ``image`` is smaller when the caller allowed shrinking (``target_short_side``).
    """

    image: Image.Image
    source_format: str
    source_mode: str
    original_size: tuple[int, int]


class DecodeBudget:
    """Bounds the pixels being decoded at once and the number of concurrent decodes.

    Decoding is where memory goes (a few bytes per pixel, several buffers), so a server that
    decodes every request in parallel needs a bound that does not depend on the number of
    requests. A decode larger than the whole budget waits until it can run alone.
    """

    def __init__(
        self,
        max_pixels_in_flight: int = DEFAULT_PIXELS_IN_FLIGHT,
        max_concurrent: int = DEFAULT_CONCURRENT_DECODES,
    ) -> None:
        if max_pixels_in_flight < 1 or max_concurrent < 1:
            raise ValueError("a decode budget needs at least 1 pixel and 1 concurrent decode")
        self.max_pixels_in_flight = max_pixels_in_flight
        self.max_concurrent = max_concurrent
        self._pixels = 0
        self._decodes = 0
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Block until ``pixels`` (capped at the whole budget) can be decoded, then hold them."""
        pixels = min(max(pixels, 0), self.max_pixels_in_flight)
        with self._changed:
            self._changed.wait_for(lambda: self._fits(pixels))
            self._pixels += pixels
            self._decodes += 1
        try:
            yield
        finally:
            with self._changed:
                self._pixels -= pixels
                self._decodes -= 1
                self._changed.notify_all()

    def _fits(self, pixels: int) -> bool:
        return (
            self._decodes < self.max_concurrent
            and self._pixels + pixels <= self.max_pixels_in_flight
        )

    @property
    def in_flight(self) -> tuple[int, int]:
        """(pixels, decodes) being decoded right now."""
        with self._changed:
            return self._pixels, self._decodes


# Shared by every decode in this process unless a caller passes its own (or None).
PROCESS_BUDGET = DecodeBudget()


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
    if mode in _HIGH_DEPTH_MODES:
        return high_depth_to_grey(img).convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(img)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode == "RGB":
            return img
    if img.mode in _ALPHA_MODES:
        return _composite_on_white(img)
    return img.convert("RGB")


def _composite_on_white(img: Image.Image) -> Image.Image:
    # Pasting through the alpha band blends onto white with one extra full-size buffer,
    # where alpha_composite needs three (RGBA background, result, RGB copy).
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba)
    return white


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    icc = img.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken profile is not worth rejecting the photo for
    return img.convert("RGB")


def high_depth_to_grey(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale -> 8-bit ``L``, converted strip by strip.

    ``I;16*`` is divided by 257; ``I`` is scaled from 16 bits when it uses them, else kept;
    ``F`` is scaled from [0, 1] when it fits, else min-max normalised. Each strip is at most
    :data:`STRIP_PIXELS` pixels, so the extra memory is the 8-bit result plus one strip
    (the old whole-image float64 copies cost 16 bytes per pixel, gigabytes at 89 MP).
    """
    width, height = img.size
    rows = max(1, STRIP_PIXELS // max(width, 1))
    strips = [(top, min(height, top + rows)) for top in range(0, height, rows)]

    def read(top: int, bottom: int) -> np.ndarray:
        values = np.asarray(img.crop((0, top, width, bottom)), dtype=np.float64)
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)

    to_byte = _grey_scaling(img.mode, lambda: (read(top, bottom) for top, bottom in strips))
    out = np.empty((height, width), dtype=np.uint8)
    for top, bottom in strips:
        out[top:bottom] = to_byte(read(top, bottom))
    return Image.fromarray(out, "L")


def _grey_scaling(
    mode: str, strips: Callable[[], Iterator[np.ndarray]]
) -> Callable[[np.ndarray], np.ndarray]:
    """The function mapping one strip of ``mode`` values to bytes (from whole-image stats)."""
    if mode.startswith("I;16"):
        factor = 1.0 / 257.0
        offset = 0.0
    else:
        lo, hi = _value_range(strips())
        if mode == "I":
            # 16-bit PNGs decode to mode "I" in some Pillow versions; deeper data is rare.
            factor, offset = 255.0 / (65535.0 if hi > 255 else 255.0), 0.0
        elif lo >= 0.0 and hi <= 1.0:  # "F": [0, 1] floats when they fit...
            factor, offset = 255.0, 0.0
        else:  # ... else min-max
            factor, offset = 255.0 / max(hi - lo, 1e-12), lo

    def to_byte(values: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((values - offset) * factor), 0, 255).astype(np.uint8)

    return to_byte


def _value_range(strips: Iterator[np.ndarray]) -> tuple[float, float]:
    # Zero is always in the range (as ``min(initial=0)`` had it): an all-positive float
    # image is scaled from 0, not stretched from its own minimum.
    lo, hi = 0.0, 0.0
    for values in strips:
        if values.size:
            lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    return lo, hi


def decode_rgb(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: frozenset[str] = SUPPORTED_FORMATS,
    target_short_side: int | None = None,
    budget: DecodeBudget | None = PROCESS_BUDGET,
) -> DecodedImage:
    """Decode encoded image bytes into an upright 8-bit RGB image.

    The whole file is decoded (so truncation is detected here, not in the training loop),
    EXIF orientation is applied (a damaged EXIF block is ignored, not fatal), animated
    images give their first frame.

    Args:
        max_pixels: refuse files with more pixels than this, before decoding any.
        formats: the container formats accepted (Pillow's names).
        target_short_side: the shorter side the caller will resize to. The decoder may then
            shrink while decoding: JPEG DCT scaling while the shorter side stays at least
            ``DCT_REDUCING_GAP`` times this, integer reduction while it stays at least
            ``REDUCING_GAP`` times this (never above the original). ``None`` keeps full size.
        budget: bounds pixels and decodes in flight across threads; ``None`` for no bound.

    Raises:
        ImageDecodeError: empty input, unknown or unsupported format, too many pixels,
            truncated or corrupt data. No other exception escapes for any input bytes.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)", "empty")
    # Never let Pillow paper over truncated files with grey pixels.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with _pillow_errors("corrupt or truncated image header"):
        img = _open(data)
    fmt = img.format or "UNKNOWN"
    if fmt not in formats:
        raise ImageDecodeError(
            f"unsupported image format {fmt}; supported: {', '.join(sorted(formats))}",
            "unsupported",
        )
    width, height = _checked_size(img, max_pixels)
    source_mode = img.mode
    with _pillow_errors("truncated or corrupt image data"):
        if target_short_side:
            _draft(img, target_short_side)
        decoded_pixels = img.size[0] * img.size[1]
        with budget.reserve(decoded_pixels) if budget else nullcontext():
            rgb, orientation = _decode_pixels(img, target_short_side)
    original_size = (height, width) if orientation in _SWAPS_SIDES else (width, height)
    return DecodedImage(
        image=rgb, source_format=fmt, source_mode=source_mode, original_size=original_size
    )


def load_rgb(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_short_side: int | None = None,
) -> Image.Image:
    """Read a file and return its upright RGB image (see :func:`decode_rgb`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}", "unreadable") from None
    return decode_rgb(data, max_pixels=max_pixels, target_short_side=target_short_side).image


@contextmanager
def _pillow_errors(what: str) -> Iterator[None]:
    """Turn whatever Pillow raises on hostile bytes into an ImageDecodeError.

    Pillow's parsers do not limit themselves to OSError: fuzzed files also give
    ``struct.error``, ``IndexError``, ``KeyError``, ``TypeError``, ``ZeroDivisionError``...
    Everything inside these blocks is Pillow working on untrusted bytes, so any exception
    there is a property of the input. MemoryError is not (it is this process's state).
    """
    # Pillow's warnings (e.g. "possibly corrupt EXIF") are left alone: silencing them needs
    # warnings.catch_warnings, which is not thread-safe and decodes run in threads.
    try:
        yield
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format", "unrecognised") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(
            f"too many pixels (decompression bomb guard): {exc}", "too_large"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # any parser failure on untrusted bytes, see the docstring
        # Kept at debug level with its traceback: should one of these ever be a flowerclf
        # bug rather than a bad file, `--verbose` shows where it came from.
        log.debug("decode failed: %s", what, exc_info=True)
        detail = str(exc) or type(exc).__name__
        raise ImageDecodeError(f"{what}: {detail}") from None


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def _checked_size(img: Image.Image, max_pixels: int) -> tuple[int, int]:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"too many pixels: {width}x{height} = {width * height:,} > limit {max_pixels:,}",
            "too_large",
        )
    return width, height


def _orientation(img: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1 when absent or unreadable.

    A fuzzed or badly written EXIF block must not cost the photo: its pixels are fine, only
    the rotation hint is lost, so the image is used as stored.
    """
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except MemoryError:
        raise
    except Exception as exc:  # damaged metadata of any kind
        log.debug("ignoring unreadable EXIF: %s: %s", type(exc).__name__, exc)
        return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _shrink_factor(size: tuple[int, int], target_short_side: int, gap: float = REDUCING_GAP) -> int:
    """The largest integer factor that keeps the shorter side >= ``gap`` x target."""
    return max(1, int(min(size) // (gap * max(target_short_side, 1))))


def _draft(img: Image.Image, target_short_side: int) -> None:
    """Let the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding (a fraction of the work
    and memory); other formats decode at full size."""
    if img.format != "JPEG":
        return
    factor = _shrink_factor(img.size, target_short_side, DCT_REDUCING_GAP)
    if factor >= 2:
        width, height = img.size
        img.draft(None, (max(1, width // factor), max(1, height // factor)))


def _decode_pixels(img: Image.Image, target_short_side: int | None) -> tuple[Image.Image, int]:
    """Decode, shrink if allowed, convert to RGB, make upright; also return the orientation."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    img.load()
    # Only after load(): reading a PNG's EXIF before it would load the pixels inside
    # _orientation, whose error handling must not swallow a corrupt image body.
    orientation = _orientation(img)
    if target_short_side:
        img = _reduce(img, target_short_side)
    rgb = convert_to_rgb(img)
    if orientation in _UPRIGHT:
        rgb = rgb.transpose(_UPRIGHT[orientation])
    rgb.load()
    return rgb, orientation


def _reduce(img: Image.Image, target_short_side: int) -> Image.Image:
    factor = _shrink_factor(img.size, target_short_side)
    if factor < 2:
        return img
    if img.mode in _HIGH_DEPTH_MODES:
        img = high_depth_to_grey(img)  # 8-bit first: 1 byte per pixel, and reducible
    elif img.mode not in _REDUCIBLE_MODES:
        img = convert_to_rgb(img)
    return img.reduce(factor)
