"""``flowerclf serve --workers 2``: two uvicorn worker processes, one correct ``/metrics``.

Each worker counts only what it handled, and a scrape reaches one of them; in Prometheus
multiprocess mode every scrape must add up both. A live server on the colour package gets
N requests on fresh connections; every scrape then reports N, whichever worker answers.
"""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.colour_package import solid
from tests.helpers.images import encode
from tests.helpers.server import run_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

REQUESTS = 24
PREDICT_OK = re.compile(
    r'^flowerclf_http_requests_total\{method="POST",route="/v1/predict",status="200"\} (\S+)$',
    re.MULTILINE,
)


def _multiprocess_dir(server_pid: int) -> Path:
    """The metrics directory the server handed its workers (from their environment)."""
    workers = psutil.Process(server_pid).children(recursive=True)
    found = {w.environ().get("PROMETHEUS_MULTIPROC_DIR") for w in workers} - {None}
    assert len(found) == 1, found
    return Path(str(found.pop()))


def test_two_workers_share_one_count_of_requests(colour_package: Path) -> None:
    image = encode(solid("red"), "PNG")
    with run_server(colour_package, ["--workers", "2"]) as server:
        metrics_dir = _multiprocess_dir(server.process.pid)

        def predict(_: int) -> int:
            # A new connection per request: the kernel hands them to either worker.
            files = {"file": ("red.png", image, "image/png")}
            return httpx.post(f"{server.url}/v1/predict", files=files, timeout=30).status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(predict, range(REQUESTS))) == [200] * REQUESTS

        for _ in range(6):  # several scrapes, on fresh connections: any worker may answer
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            assert [float(v) for v in PREDICT_OK.findall(text)] == [REQUESTS]
            assert "flowerclf_model_loaded 1.0" in text
        # Both workers keep their values in the server's fresh directory.
        pids = {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2
    assert not metrics_dir.exists()  # removed when the server stops
