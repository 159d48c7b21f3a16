"""Seeded, bounded fuzzing of the upload path: mutated small JPEG/PNG/GIF/WebP files.

Every answer must be a 200 prediction or one of the documented image errors in the error
schema; never a 5xx. The seed is fixed, so a failure names a reproducible case.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers.colour_package import split
from tests.helpers.corpus import encode

SEED = 20261201
CASES_PER_FORMAT = 90
# status -> the error codes that status may carry for an uploaded image
ALLOWED = {
    413: {"image_too_large"},
    415: {"unsupported_image_format"},
    422: {"invalid_image"},
}

Mutation = Callable[[bytes, random.Random], bytes]


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(1, len(data))]


def edit_header(data: bytes, rng: random.Random) -> bytes:
    """Overwrite bytes in the first 64 (signatures, sizes, chunk lengths) with extremes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        position = rng.randrange(min(64, len(out) - 2))
        value = rng.choice([b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00",
                            struct.pack(">H", rng.randrange(65536))])  # fmt: skip
        out[position : position + 2] = value
    return bytes(out)


def splice(data: bytes, rng: random.Random) -> bytes:
    """Repeat or drop a slice of the file (broken chunk structure)."""
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 256))
    if rng.random() < 0.5:
        return data[:end] + data[start:]
    return data[:start] + data[end:]


MUTATIONS: list[Mutation] = [flip_bits, truncate, edit_header, splice]


def seeds() -> dict[str, bytes]:
    image = split("red", "green", size=(40, 30))
    return {
        "JPEG": encode(image, "JPEG", quality=85),
        "PNG": encode(image, "PNG"),
        "GIF": encode(image.convert("P"), "GIF"),
        "WEBP": encode(image, "WEBP", quality=80),
    }


def mutated_cases() -> list[tuple[str, bytes]]:
    rng = random.Random(SEED)
    cases = []
    for fmt, data in seeds().items():
        for index in range(CASES_PER_FORMAT):
            mutation = MUTATIONS[index % len(MUTATIONS)]
            cases.append((f"{fmt}-{mutation.__name__}-{index}", mutation(data, rng)))
    return cases


def _check(name: str, status: int, body: dict[str, Any]) -> None:
    if status == 200:
        assert set(body["all_predictions"]) == {"red", "green", "blue"}, name
        return
    assert status in ALLOWED, f"{name}: status {status}: {body}"
    error = body["error"]
    assert set(error) == {"code", "message", "status", "details"}, name
    assert error["status"] == status and error["code"] in ALLOWED[status], f"{name}: {error}"
    assert error["message"], name


def test_mutated_images_get_200_or_a_documented_4xx(client: TestClient) -> None:
    cases = mutated_cases()
    assert len(cases) >= 300
    statuses: dict[int, int] = {}
    for name, data in cases:
        response = client.post("/v1/predict", files={"file": ("upload", data)})
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        _check(name, response.status_code, response.json())
    # The mutations must reach both sides of the decoder, or the test proves little.
    assert statuses.get(200, 0) >= 10 and statuses.get(422, 0) >= 50, statuses


@pytest.mark.parametrize("name_and_data", mutated_cases()[::40], ids=lambda c: c[0])
def test_mutated_images_in_a_batch_fail_only_their_own_row(
    client: TestClient, name_and_data: tuple[str, bytes]
) -> None:
    name, data = name_and_data
    good = encode(split("blue", "red"), "PNG")
    files = [("files", ("good.png", good)), ("files", (name, data))]
    response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["prediction"]["predicted_class"] == "blue"
    if not results[1]["ok"]:
        error = results[1]["error"]
        assert error["code"] in ALLOWED[error["status"]], error
