"""Open, hash and fully decode every file of a raw dataset exactly once.

The scan is the only place that reads the raw files during preparation: it records the
content hash (for de-duplication and the manifest), the upright size, and, for files that
cannot be used, a short reason that ends up in the dataset report.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from flowerclf.core.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_rgb

log = logging.getLogger(__name__)

# Validation needs every byte decoded, not every pixel kept: the scan lets the decoder
# shrink (JPEG DCT scaling, integer reduce) to this short side, which still reads and checks
# the whole file but keeps a 50 MP photo from costing hundreds of megabytes per worker.
SCAN_SHORT_SIDE = 64


@dataclass(frozen=True)
class ScanResult:
    """What one file turned out to be. ``error`` is ``None`` for a usable image."""

    path: str
    sha256: str | None
    width: int | None
    height: int | None
    image_format: str | None
    mode: str | None
    error: str | None


def scan_file(raw_dir: Path, relative: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ScanResult:
    """Read, hash and decode one file; never raises for bad content."""
    path = raw_dir / relative
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ScanResult(relative, None, None, None, None, None, f"cannot read: {exc.strerror}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        decoded = decode_rgb(data, max_pixels=max_pixels, target_short_side=SCAN_SHORT_SIDE)
    except ImageDecodeError as exc:
        return ScanResult(relative, digest, None, None, None, None, exc.reason)
    width, height = decoded.original_size
    return ScanResult(
        relative, digest, width, height, decoded.source_format, decoded.source_mode, None
    )


def _scan_chunk(args: tuple[str, list[str], int]) -> list[ScanResult]:
    raw_dir, paths, max_pixels = args
    return [scan_file(Path(raw_dir), p, max_pixels) for p in paths]


def scan_files(
    raw_dir: Path,
    paths: Iterable[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 0,
    chunk_size: int = 64,
) -> dict[str, ScanResult]:
    """Scan ``paths`` (relative to ``raw_dir``) with a progress bar.

    Args:
        workers: processes to decode with; 0 or 1 decodes in this process.

    Returns:
        Results keyed by relative path (order-independent, so parallelism cannot change
        the outcome).
    """
    paths = list(paths)
    results: dict[str, ScanResult] = {}
    bar = tqdm(total=len(paths), desc="validate images", unit="img")
    try:
        if workers <= 1 or len(paths) < 2 * chunk_size:
            for relative in paths:
                results[relative] = scan_file(raw_dir, relative, max_pixels)
                bar.update(1)
        else:
            chunks = [paths[i : i + chunk_size] for i in range(0, len(paths), chunk_size)]
            jobs = [(str(raw_dir), chunk, max_pixels) for chunk in chunks]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for chunk_results in pool.map(_scan_chunk, jobs):
                    for result in chunk_results:
                        results[result.path] = result
                    bar.update(len(chunk_results))
    finally:
        bar.close()
    return results
