"""Seeded mutated images for fuzzing the decoders (``decode_rgb``, the CLI, the REST route).

:func:`seed_images` encodes small valid images in every supported format and in the odd
modes the decoder handles specially (16-bit, CMYK, alpha, palette, animation, EXIF
orientation); :func:`mutations` derives any number of damaged variants from them: bit flips,
random bytes, truncation, header edits (sizes, magic numbers), spliced and repeated chunks.
The same seed always gives the same bytes, so a failure found by the long run
(``python -m scripts.fuzz_images``) is reproduced by its seed and index.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.helpers.images import encode, make_photo

# Small so that thousands of cases decode in seconds; a header edit can still claim a
# large size, which is what the pixel limit is for.
SEED_SIZE = (48, 36)


@dataclass(frozen=True)
class FuzzCase:
    """One mutated file: where it came from and how it was damaged."""

    index: int
    seed_name: str
    mutation: str
    data: bytes

    @property
    def suffix(self) -> str:
        return _SUFFIXES.get(self.seed_name.split("-")[0], ".img")


_SUFFIXES = {
    "jpeg": ".jpg",
    "png": ".png",
    "webp": ".webp",
    "bmp": ".bmp",
    "gif": ".gif",
    "tiff": ".tif",
}


def _exif_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW
    exif[0x010F] = "Camera"
    exif[0x8769] = {0x9003: "2024:05:01 12:00:00"}
    return encode(make_photo(SEED_SIZE, 1), "JPEG", exif=exif.tobytes())


def _sixteen_bit_png() -> bytes:
    values = np.arange(SEED_SIZE[0] * SEED_SIZE[1], dtype=np.uint32) * 97 % 65536
    return encode(Image.fromarray(values.astype(np.uint16).reshape(SEED_SIZE[::-1])), "PNG")


def _rgba_png() -> bytes:
    rgba = make_photo(SEED_SIZE, 2).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(SEED_SIZE))
    return encode(rgba, "PNG")


def _palette_png() -> bytes:
    palette = make_photo(SEED_SIZE, 3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(palette, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [make_photo(SEED_SIZE, seed).convert("P") for seed in (4, 5)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


def seed_images() -> dict[str, bytes]:
    """Valid files, one per format and special mode; the fuzzer's starting points."""
    photo = make_photo(SEED_SIZE, 0)
    return {
        "jpeg-rgb": encode(photo, "JPEG", quality=90),
        "jpeg-progressive": encode(photo, "JPEG", progressive=True),
        "jpeg-exif": _exif_jpeg(),
        "jpeg-cmyk": encode(photo.convert("CMYK"), "JPEG"),
        "jpeg-grey": encode(photo.convert("L"), "JPEG"),
        "png-rgb": encode(photo, "PNG"),
        "png-16bit": _sixteen_bit_png(),
        "png-rgba": _rgba_png(),
        "png-palette": _palette_png(),
        "webp-lossy": encode(photo, "WEBP", quality=80),
        "webp-lossless": encode(photo.convert("RGBA"), "WEBP", lossless=True),
        "bmp-rgb": encode(photo, "BMP"),
        "gif-animated": _animated_gif(),
        "tiff-rgb": encode(photo, "TIFF"),
        "tiff-deflate": encode(photo, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-cmyk": encode(photo.convert("CMYK"), "TIFF"),
    }


_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
_INTERESTING_WORDS = (b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff",
                      b"\x00\x00\xff\xff", b"\x80\x00\x00\x00", b"\x00\x01\x00\x00")  # fmt: skip


def _flip_bits(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)


def _random_bytes(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 16)):
        data[rng.randrange(len(data))] = rng.randrange(256)


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(1, len(data)) :]


def _edit_header(data: bytearray, rng: random.Random) -> None:
    """Overwrite bytes where formats keep magic numbers, sizes and chunk lengths."""
    end = min(len(data), 96)
    for _ in range(rng.randint(1, 3)):
        position = rng.randrange(end)
        if rng.random() < 0.5:
            data[position] = rng.choice(_INTERESTING_BYTES)
        else:
            word = rng.choice(_INTERESTING_WORDS)
            data[position : position + len(word)] = word


def _edit_metadata(data: bytearray, rng: random.Random) -> None:
    """Damage an EXIF block (tag ids, types, counts, offsets), else the header."""
    start = data.find(b"Exif\x00\x00")
    if start < 0:
        _edit_header(data, rng)
        return
    start += 6  # the TIFF structure after the "Exif" marker
    end = min(len(data), start + 128)
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(start, end)] = rng.randrange(256)


def _splice(data: bytearray, rng: random.Random) -> None:
    """Repeat or move a random segment (duplicated chunks, markers in odd places)."""
    start = rng.randrange(len(data))
    segment = data[start : start + rng.randint(1, 64)]
    insert_at = rng.randrange(len(data))
    data[insert_at:insert_at] = segment * rng.randint(1, 4)


def _delete_span(data: bytearray, rng: random.Random) -> None:
    start = rng.randrange(len(data))
    del data[start : start + rng.randint(1, 32)]


MUTATORS: dict[str, Callable[[bytearray, random.Random], None]] = {
    "bit_flip": _flip_bits,
    "random_bytes": _random_bytes,
    "truncate": _truncate,
    "header_edit": _edit_header,
    "metadata_edit": _edit_metadata,
    "splice": _splice,
    "delete_span": _delete_span,
}


def mutations(count: int, seed: int = 0) -> Iterator[FuzzCase]:
    """``count`` mutated images, deterministic for ``seed``; seeds are used round-robin."""
    rng = random.Random(seed)
    seeds = sorted(seed_images().items())
    names = sorted(MUTATORS)
    for index in range(count):
        seed_name, original = seeds[index % len(seeds)]
        mutation = rng.choice(names)
        data = bytearray(original)
        MUTATORS[mutation](data, rng)
        yield FuzzCase(index, seed_name, mutation, bytes(data))
