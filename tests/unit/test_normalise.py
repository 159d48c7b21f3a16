"""The table-lookup normalisation gives exactly the float arithmetic's values."""

from __future__ import annotations

import numpy as np
import pytest

from flowerclf.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalise


@pytest.mark.parametrize(
    ("mean", "std"), [((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), (IMAGENET_MEAN, IMAGENET_STD)]
)
def test_lookup_equals_per_pixel_arithmetic(mean: tuple, std: tuple) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    pixels[0, :3] = [[0, 0, 0], [255, 255, 255], [128, 1, 254]]  # the extremes too
    expected = (pixels.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(
        std, np.float32
    )
    out = normalise(pixels, mean, std)
    assert out.dtype == np.float32 and out.shape == (3, 37, 53) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.ascontiguousarray(expected.transpose(2, 0, 1)))
