"""Decoding JPEGs at reduced DCT scale changes no answer that matters (issue 16).

The tf_flowers photos are smaller than twice the resize size, so they are enlarged 3x and
re-encoded (phone-photo sizes) to exercise the reduced decode; the model's top-1 answers on
them must agree with full decoding on >= 99.5 % (scripts/decode_agreement.py measures the
whole test split and the speed).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowerclf import Classifier
from flowerclf.core.imaging import decode_rgb
from flowerclf.core.preprocess import preprocess_eval

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PACKAGE_ENV = "FLOWERCLF_TEST_PACKAGE"
PHOTOS = 200  # one disagreement in 200 is exactly 99.5 %
SCALE = 3
MIN_AGREEMENT = 0.995


def _enlarged_photos(shared_data: Path) -> list[bytes]:
    photos = sorted((shared_data / "tf_flowers").rglob("*.jpg"))
    out = []
    for path in photos[:: max(1, len(photos) // PHOTOS)][:PHOTOS]:  # every class folder
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        big = rgb.resize((rgb.width * SCALE, rgb.height * SCALE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        big.save(buffer, "JPEG", quality=92)
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("source", ["fixture", "env"])
def test_reduced_dct_decode_agrees_with_full_decode(
    source: str, request: pytest.FixtureRequest, shared_data: Path
) -> None:
    package = os.environ.get(PACKAGE_ENV)
    if source == "fixture":
        package = request.getfixturevalue("model_package").package
    if package is None:
        pytest.skip(f"set {PACKAGE_ENV}=<exported package> to check a real model too")
    photos = _enlarged_photos(shared_data)
    assert len(photos) == PHOTOS
    with Classifier.load(package, backend="onnx") as classifier:
        spec = classifier.spec
        decoded = [decode_rgb(p, target_short_side=spec.resize_size) for p in photos]
        # Most photos did decode at reduced scale (the rest are under 2x the resize size).
        reduced_count = sum(min(d.image.size) < min(d.original_size) for d in decoded)
        assert reduced_count >= PHOTOS // 2, reduced_count
        full = np.stack([preprocess_eval(decode_rgb(p).image, spec) for p in photos])
        reduced = np.stack([classifier.preprocess(p) for p in photos])  # the inference path
        full_probs = classifier.run_arrays(full).probabilities
        reduced_probs = classifier.run_arrays(reduced).probabilities
    agreement = float((full_probs.argmax(1) == reduced_probs.argmax(1)).mean())
    assert agreement >= MIN_AGREEMENT, agreement
