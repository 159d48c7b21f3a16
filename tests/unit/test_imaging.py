"""decode_rgb: every odd input becomes correct RGB or a clear, specific error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from flowerclf.core.imaging import ImageDecodeError, decode_rgb, load_rgb
from tests.helpers.images import encode, make_photo


def test_plain_jpeg_round_trip() -> None:
    decoded = decode_rgb(encode(make_photo((50, 30))))
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (50, 30)
    assert decoded.source_format == "JPEG"


def test_empty_file_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_rgb(b"")


def test_non_image_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="not a recognised image format"):
        decode_rgb(b"this is a text file, not a photo\n" * 10)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_rejected(fmt: str) -> None:
    data = encode(make_photo((200, 150), 3), fmt)
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_rgb(data[: len(data) // 2])


def test_corrupt_body_is_rejected() -> None:
    data = bytearray(encode(make_photo((120, 90), 4), "PNG"))
    data[60:200] = b"\x00" * 140  # damage the IDAT chunk (CRC and zlib stream)
    with pytest.raises(ImageDecodeError):
        decode_rgb(bytes(data))


def test_cmyk_jpeg_becomes_rgb() -> None:
    rgb = Image.new("RGB", (32, 32), (200, 30, 40))
    cmyk = rgb.convert("CMYK")
    decoded = decode_rgb(encode(cmyk, "JPEG", quality=95))
    assert decoded.source_mode == "CMYK"
    assert decoded.image.mode == "RGB"
    r, g, b = decoded.image.getpixel((16, 16))
    assert r > 150 and g < 90 and b < 90, (r, g, b)


def test_rgba_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((5, 5), (255, 0, 0, 255))
    decoded = decode_rgb(encode(rgba, "PNG"))
    assert decoded.source_mode == "RGBA"
    assert decoded.image.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.image.getpixel((5, 5)) == (255, 0, 0)


def test_la_and_palette_with_transparency() -> None:
    la = Image.new("LA", (8, 8), (0, 0))
    assert decode_rgb(encode(la, "PNG")).image.getpixel((1, 1)) == (255, 255, 255)
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    palette.info["transparency"] = 0
    assert decode_rgb(encode(palette, "PNG", transparency=0)).image.getpixel((0, 0)) == (
        255,
        255,
        255,
    )


def test_greyscale_and_palette_become_rgb() -> None:
    grey = Image.new("L", (8, 8), 100)
    assert decode_rgb(encode(grey, "PNG")).image.getpixel((0, 0)) == (100, 100, 100)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    assert decode_rgb(encode(palette, "PNG")).image.getpixel((0, 0)) == (10, 200, 30)


def test_sixteen_bit_png_is_rescaled_not_clipped() -> None:
    values = np.full((6, 6), 32896, dtype=np.uint16)  # 128 * 257: mid grey in 16 bits
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    decoded = decode_rgb(encode(image, "PNG"))
    assert decoded.image.getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied() -> None:
    photo = make_photo((60, 20))  # landscape pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the photo is really portrait
    decoded = decode_rgb(encode(photo, "JPEG", exif=exif.tobytes()))
    assert decoded.image.size == (20, 60)


def test_decompression_bomb_guard() -> None:
    data = encode(Image.new("RGB", (300, 300)), "PNG")
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        decode_rgb(data, max_pixels=300 * 300 - 1)
    assert decode_rgb(data, max_pixels=300 * 300).image.size == (300, 300)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, _g, b = decode_rgb(buffer.getvalue()).image.getpixel((4, 4))
    assert r > 200 and b < 50


def test_unsupported_format_names_the_supported_ones() -> None:
    data = encode(make_photo((16, 16)), "PCX")
    with pytest.raises(ImageDecodeError, match="unsupported image format PCX; supported: "):
        decode_rgb(data)


def test_load_rgb_missing_file(tmp_path) -> None:
    with pytest.raises(ImageDecodeError, match="cannot read file"):
        load_rgb(tmp_path / "missing.jpg")
