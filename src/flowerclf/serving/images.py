"""Uploaded bytes -> RGB image, with each kind of bad input mapped to its HTTP status.

* not an image at all, or a format the model does not take: 415 with the accepted list;
* more pixels than ``max_pixels`` (decompression bombs): 413, refused before decoding;
* truncated or corrupt data: 422.

Only the bytes decide the format: file names and declared content types are ignored.
"""

from __future__ import annotations

import base64
import binascii

from PIL import Image

from flowerclf.core.imaging import SUPPORTED_FORMATS, ImageDecodeError, decode_rgb
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


def decode_upload(
    data: bytes, max_pixels: int, target_short_side: int | None = None
) -> Image.Image:
    """Validate and decode one uploaded image (through the same decoder as everywhere).

    The pixel limit is checked from the header, before any pixel data is decoded; with
    ``target_short_side`` (the model's resize size) big images shrink while decoding, as
    in :meth:`flowerclf.Classifier.predict`.

    Raises:
        ApiError: 413, 415 or 422 as described in the module docstring.
    """
    try:
        return decode_rgb(data, max_pixels=max_pixels, target_short_side=target_short_side).image
    except ImageDecodeError as exc:
        raise _api_error(exc, data, max_pixels) from None
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"too many pixels: {exc}") from None
    except Exception as exc:  # a decoder bug on hostile input must not become a 500
        raise ApiError(422, "invalid_image", f"image could not be decoded: {exc}") from None


def _api_error(exc: ImageDecodeError, data: bytes, max_pixels: int) -> ApiError:
    if exc.kind == "too_large":
        return ApiError(413, "image_too_large", exc.reason, {"max_pixels": max_pixels})
    if exc.kind == "unsupported":
        return unsupported(f"{exc.reason}; accepted: {', '.join(ACCEPTED)}")
    if exc.kind == "unrecognised":
        claimed = signature_format(data)
        if claimed is not None:  # starts like an accepted format: a damaged file
            return ApiError(
                422, "invalid_image", f"truncated or corrupt {claimed} file (header unreadable)"
            )
        return unsupported(f"not a recognised image; accepted formats: {', '.join(ACCEPTED)}")
    return ApiError(422, "invalid_image", exc.reason)


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
