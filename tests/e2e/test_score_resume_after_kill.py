"""A ``flowerclf score`` process killed mid-job (SIGKILL, workers and all) and rerun
finishes the job with exactly one row per image."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flowerclf.scoring.output import SUCCESS_FILE
from tests.helpers.server import subprocess_env

pytestmark = pytest.mark.slow

IMAGES = 48
PARTITION_SIZE = 2
KILL_AFTER = 3  # partitions on disk
TIMEOUT_S = 180


@pytest.fixture(scope="module")
def slow_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large noise PNGs: each takes tens of milliseconds to decode, so the job lasts long
    enough to be killed in the middle. One file, hard-linked under many names."""
    root = tmp_path_factory.mktemp("slow-images")
    pixels = np.random.default_rng(0).integers(0, 256, size=(1400, 1400, 3), dtype=np.uint8)
    first = root / "image-000.png"
    Image.fromarray(pixels).save(first, compress_level=1)
    for i in range(1, IMAGES):
        os.link(first, root / f"image-{i:03d}.png")
    return root


def _score(package: Path, images: Path, out: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "flowerclf", "-q", "score", "--model", str(package),
               "--input", str(images), "--output", str(out), "--workers", "2",
               "--partition-size", str(PARTITION_SIZE), "--json"]  # fmt: skip
    # A session of its own: the kill reaches the pool's worker processes too.
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env=subprocess_env(), start_new_session=True)  # fmt: skip


def test_killed_job_resumes_without_duplicates(
    colour_package: Path, slow_images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores"
    process = _score(colour_package, slow_images, out, tmp_path / "first.log")
    deadline = time.monotonic() + TIMEOUT_S
    while len(list(out.glob("part-*.parquet"))) < KILL_AFTER:
        assert process.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "no partitions written"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    written = len(list(out.glob("part-*.parquet")))
    assert not (out / SUCCESS_FILE).exists(), "the job finished before it could be killed"
    assert written < IMAGES // PARTITION_SIZE

    rerun = _score(colour_package, slow_images, out, tmp_path / "second.log")
    assert rerun.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "second.log").read_text()
    report = json.loads((tmp_path / "second.log").read_text().strip().splitlines()[-1])
    assert report["skipped_partitions"] >= written  # the finished files were kept
    assert report["images"] == IMAGES and report["errors"] == 0
    paths = pq.read_table(out).column("path").to_pylist()
    assert sorted(paths) == sorted(str(p) for p in slow_images.glob("*.png"))
    assert len(paths) == len(set(paths)) == IMAGES
    assert not list(out.glob(".part-*")), "a temporary file was left behind"
