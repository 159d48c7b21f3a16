"""Uploaded bytes -> RGB image, with each kind of bad input mapped to its HTTP status.

* not an image at all, or a format the model does not take: 415 with the accepted list;
* more pixels than ``max_pixels`` (decompression bombs): 413, refused before decoding;
* truncated or corrupt data: 422.

Only the bytes decide the format: file names and declared content types are ignored.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, UnidentifiedImageError

from flowerclf.imaging import SUPPORTED_FORMATS, ImageDecodeError, decode_rgb
from flowerclf.serving.errors import ApiError

ACCEPTED = sorted(SUPPORTED_FORMATS)

# File signatures of the accepted formats: bytes that start like one of them but that
# Pillow cannot open are a damaged image (422), not an unsupported one (415).
MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def signature_format(data: bytes) -> str | None:
    """The accepted format ``data`` claims to be by its first bytes, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in MAGIC if data.startswith(magic)), None)


def unsupported(message: str) -> ApiError:
    return ApiError(415, "unsupported_image_format", message, {"accepted_formats": ACCEPTED})


def _sniff(data: bytes, max_pixels: int) -> None:
    """Check format and size from the header alone (cheap, no pixel data decoded)."""
    if not data:
        raise ApiError(422, "invalid_image", "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = img.format or "UNKNOWN", img.size
    except UnidentifiedImageError:
        claimed = signature_format(data)
        if claimed is not None:
            raise ApiError(
                422, "invalid_image", f"truncated or corrupt {claimed} file (header unreadable)"
            ) from None
        raise unsupported(
            f"not a recognised image; accepted formats: {', '.join(ACCEPTED)}"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"too many pixels: {exc}") from None
    except Exception as exc:  # Pillow plugins raise many types on hostile headers
        raise ApiError(422, "invalid_image", f"corrupt image header: {exc}") from None
    if fmt not in SUPPORTED_FORMATS:
        raise unsupported(f"image format {fmt} is not accepted; accepted: {', '.join(ACCEPTED)}")
    if width * height > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"image has {width}x{height} = {width * height:,} pixels, over the limit "
            f"of {max_pixels:,}",
            {"max_pixels": max_pixels, "width": width, "height": height},
        )


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """Validate and decode one uploaded image.

    Raises:
        ApiError: 413, 415 or 422 as described in the module docstring.
    """
    _sniff(data, max_pixels)
    try:
        return decode_rgb(data, max_pixels=max_pixels).image
    except ImageDecodeError as exc:
        raise ApiError(422, "invalid_image", exc.reason) from None
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"too many pixels: {exc}") from None
    except Exception as exc:  # a decoder bug on hostile input must not become a 500
        raise ApiError(422, "invalid_image", f"image could not be decoded: {exc}") from None


def decode_base64(text: str) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, optional ``data:`` prefix)."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    cleaned = "".join(text.split())
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422, "validation_error", "field 'image' is not valid base64-encoded data"
        ) from None
