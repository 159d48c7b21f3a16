"""Issue 12 regressions for decode_rgb: bounded memory, shrink-on-decode, hostile bytes.

Memory is measured in a fresh subprocess (peak RSS from ``resource.getrusage``) so that
nothing this test process allocated earlier hides or inflates the figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowerclf.core.imaging import (
    DEFAULT_MAX_PIXELS,
    REDUCING_GAP,
    DecodeBudget,
    ImageDecodeError,
    decode_rgb,
)
from flowerclf.core.preprocess import PreprocessSpec, preprocess_eval
from tests.helpers.fuzz import mutations
from tests.helpers.images import encode, make_photo

DECODE_KINDS = {"empty", "unrecognised", "unsupported", "too_large", "corrupt"}
SIDE_9400 = 9400  # 88.4 MP: under the old 89.5 MP default limit, over the new one

_MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    from flowerclf.core.imaging import ImageDecodeError, decode_rgb
    data = Path(sys.argv[1]).read_bytes()
    kwargs = json.loads(sys.argv[2])
    threads = int(sys.argv[3])

    def decode(_):
        try:
            return list(decode_rgb(data, **kwargs).image.size), None
        except ImageDecodeError as exc:
            return None, exc.kind

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(decode, range(threads)))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    size, kind = results[0]
    print(json.dumps({"size": size, "kind": kind, "seconds": seconds,
                      "growth_mb": (peak - before) / 1024}))
    """
)


def measure_decode(path: Path, threads: int = 1, **kwargs: object) -> dict[str, object]:
    """Decode ``path`` in a fresh interpreter (``threads`` times at once); the result size or
    error kind, seconds, and the growth of peak RSS in MB."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), json.dumps(kwargs), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def png_16bit_9400(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's probe: a ~0.2 MB 16-bit greyscale PNG of 9400 x 9400 pixels."""
    row = (np.arange(SIDE_9400, dtype=np.uint32) * 7 % 65536).astype(np.uint16)
    pixels = np.ascontiguousarray(np.broadcast_to(row, (SIDE_9400, SIDE_9400)))
    path = tmp_path_factory.mktemp("probes") / "grey16_9400.png"
    Image.fromarray(pixels).save(path, compress_level=9)
    assert path.stat().st_size < 1_000_000
    return path


def test_16bit_9400px_png_decodes_in_bounded_memory(png_16bit_9400: Path) -> None:
    # Before: full-size float64 copies, 2.9 GB peak growth here (issue: 1.4 -> 4.1 GB).
    # Now: the 16-bit pixels (177 MB), the 8-bit result and the RGB image (4 bytes/pixel).
    full = measure_decode(png_16bit_9400, max_pixels=89_478_485)
    assert full["size"] == [SIDE_9400, SIDE_9400]
    assert full["growth_mb"] < 900, full


def test_16bit_9400px_png_shrinks_while_decoding_for_inference(png_16bit_9400: Path) -> None:
    # What the classifier, REST and Triton ask for: only enough pixels for a 256 px resize.
    small = measure_decode(png_16bit_9400, max_pixels=89_478_485, target_short_side=256)
    assert small["size"] is not None and min(small["size"]) >= REDUCING_GAP * 256
    assert max(small["size"]) < SIDE_9400 // 8
    assert small["growth_mb"] < 400, small


@pytest.mark.slow  # three full decodes one after another: ~10-25 s on a busy 2-core box
def test_three_concurrent_9400px_decodes_stay_within_the_decode_budget(
    png_16bit_9400: Path,
) -> None:
    # Issue: three at once took 6.2 GB. The process-wide DecodeBudget (100 MP in flight)
    # lets only one 88 MP decode run at a time, so three cost what one costs.
    three = measure_decode(png_16bit_9400, threads=3, max_pixels=89_478_485)
    assert three["size"] == [SIDE_9400, SIDE_9400]
    assert three["growth_mb"] < 1200, three


def test_default_pixel_limit_refuses_9400px_png_from_its_header(png_16bit_9400: Path) -> None:
    assert DEFAULT_MAX_PIXELS < SIDE_9400 * SIDE_9400
    refused = measure_decode(png_16bit_9400)
    assert refused["kind"] == "too_large"
    assert refused["growth_mb"] < 50, refused  # nothing decoded


def test_large_jpeg_is_scaled_by_the_jpeg_decoder(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.radial_gradient("L").resize((6000, 4000)).convert("RGB").save(path, quality=85)
    result = measure_decode(path, target_short_side=256)
    # DCT scaling by 1/8 (6000 x 4000 -> 750 x 500): still >= 256 on the short side.
    assert result["size"] == [750, 500]
    assert result["growth_mb"] < 60, result  # a full decode holds 96 MB of RGB alone


def test_shrinking_decode_gives_the_same_model_input() -> None:
    spec = PreprocessSpec(input_size=224, mean=(0.5,) * 3, std=(0.25,) * 3)
    image = make_photo((600, 450), 3).resize((2400, 1800), Image.Resampling.BICUBIC)
    for fmt in ("JPEG", "PNG"):
        data = encode(image, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        full = preprocess_eval(decode_rgb(data).image, spec)
        shrunk_image = decode_rgb(data, target_short_side=spec.resize_size).image
        assert min(shrunk_image.size) < 1800  # it did shrink
        shrunk = preprocess_eval(shrunk_image, spec)
        # Normalised units (std 0.25): 0.02 is half a grey level on average.
        assert float(np.abs(full - shrunk).mean()) < 0.02, fmt


def test_shrinking_decode_keeps_small_images_exact() -> None:
    data = encode(make_photo((500, 375), 2), "PNG")
    assert decode_rgb(data, target_short_side=256).image.tobytes() == (
        decode_rgb(data).image.tobytes()
    )


def test_shrinking_decode_reports_the_original_upright_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    data = encode(make_photo((2400, 1200), 1), "JPEG", exif=exif.tobytes())
    decoded = decode_rgb(data, target_short_side=100)
    assert decoded.original_size == (1200, 2400)
    width, height = decoded.image.size
    assert width < height and width < 1200


def _exif_with_mistyped_tag() -> bytes:
    """A JPEG whose EXIF stores tag 0x0109 (a SHORT) as ASCII: Pillow's EXIF re-serialisation
    in ``ImageOps.exif_transpose`` raised ``struct.error`` on it (issue 12, item 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    raw = exif.tobytes()
    assert raw.count(b"\x01\x0f\x00\x02") == 1
    return encode(make_photo((64, 48)), "JPEG", exif=raw.replace(b"\x01\x0f\x00\x02",
                                                                 b"\x01\x09\x00\x02"))  # fmt: skip


def test_jpeg_with_corrupt_exif_is_decoded_not_a_struct_error() -> None:
    decoded = decode_rgb(_exif_with_mistyped_tag())
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (48, 64)  # the orientation tag itself was readable


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's "corrupt EXIF" notes
def test_seeded_fuzz_gives_images_or_decode_errors_only() -> None:
    # Seed 3's 500 cases include a truncated GIF (IndexError) and a damaged EXIF block
    # (struct.error) that escaped before; each case must be an RGB image or a documented
    # ImageDecodeError kind.
    outcomes: Counter[str] = Counter()
    uncaught = []
    for case in mutations(500, seed=3):
        try:
            image = decode_rgb(case.data, max_pixels=4_000_000).image
        except ImageDecodeError as exc:
            assert exc.kind in DECODE_KINDS, (case.index, exc.kind)
            outcomes[exc.kind] += 1
            continue
        except Exception as exc:  # the property under test: nothing else escapes
            uncaught.append((case.index, case.seed_name, case.mutation, repr(exc)))
            continue
        assert image.mode == "RGB" and min(image.size) > 0
        outcomes["decoded"] += 1
    assert not uncaught, uncaught
    assert outcomes["decoded"] > 50 and outcomes["corrupt"] > 50, outcomes


def test_decode_budget_bounds_concurrent_decodes() -> None:
    budget = DecodeBudget(max_pixels_in_flight=1000, max_concurrent=2)
    peak = {"pixels": 0, "decodes": 0}
    lock = threading.Lock()

    def work(pixels: int) -> None:
        with budget.reserve(pixels):
            with lock:
                pixels_now, decodes_now = budget.in_flight
                peak["pixels"] = max(peak["pixels"], pixels_now)
                peak["decodes"] = max(peak["decodes"], decodes_now)
            time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(p,)) for p in [400] * 6 + [5000, 100, 100]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert peak["decodes"] <= 2 and peak["pixels"] <= 1000  # 5000 was capped to the budget
    assert budget.in_flight == (0, 0)


def test_decode_uses_the_budget_it_is_given() -> None:
    budget = DecodeBudget(max_pixels_in_flight=10, max_concurrent=1)
    seen = []

    class Spy(DecodeBudget):
        def reserve(self, pixels: int):  # type: ignore[override]
            seen.append(pixels)
            return budget.reserve(pixels)

    decode_rgb(encode(make_photo((40, 30)), "PNG"), budget=Spy())
    assert seen == [1200]
