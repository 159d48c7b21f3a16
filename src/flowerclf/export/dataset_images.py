"""The run's dataset images, preprocessed exactly as every runtime does, for export checks.

Parity, int8 calibration and comparison, and the embeddings index all run the exported
model on real images of the prepared dataset, decoded and preprocessed with the
package's own spec (two decode threads: decoding and resizing release the GIL).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from flowerclf.core.imaging import load_rgb
from flowerclf.core.preprocess import PreprocessSpec, preprocess_eval
from flowerclf.data.manifest import ManifestRow

THUMBNAIL_SIZE = 128
THUMBNAIL_QUALITY = 85
DECODE_THREADS = 2


def preprocess_rows(
    rows: Sequence[ManifestRow], raw_dir: Path, spec: PreprocessSpec, desc: str
) -> np.ndarray:
    """Manifest rows -> ``(N, 3, S, S)`` float32, all in memory (for the smaller splits)."""
    chunks = list(iter_preprocessed(rows, raw_dir, spec, desc, chunk=max(1, len(rows))))
    if not chunks:
        return np.zeros((0, 3, spec.input_size, spec.input_size), np.float32)
    return chunks[0]


def iter_preprocessed(
    rows: Sequence[ManifestRow],
    raw_dir: Path,
    spec: PreprocessSpec,
    desc: str,
    chunk: int,
    thumbnails: Path | None = None,
) -> Iterator[np.ndarray]:
    """Manifest rows -> preprocessed arrays of ``chunk`` images at a time, in row order.

    Memory stays at one chunk however large the split. With ``thumbnails``, each image
    is also saved there as ``<row id>.jpg`` (at most ``THUMBNAIL_SIZE`` px a side).
    """

    def one(row: ManifestRow) -> np.ndarray:
        image = load_rgb(raw_dir / row.path)
        if thumbnails is not None:
            _save_thumbnail(image, thumbnails / f"{row.id}.jpg")
        return preprocess_eval(image, spec)

    with (
        ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool,
        tqdm(total=len(rows), desc=desc, unit="img") as bar,
    ):
        for start in range(0, len(rows), chunk):
            arrays = list(pool.map(one, rows[start : start + chunk]))
            bar.update(len(arrays))
            yield np.stack(arrays)


def _save_thumbnail(image: Image.Image, path: Path) -> None:
    thumb = image.copy()
    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BICUBIC)
    thumb.save(path, quality=THUMBNAIL_QUALITY)
