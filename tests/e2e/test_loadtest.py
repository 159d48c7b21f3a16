"""The load-test command, in a short smoke version against the shared server process."""

from __future__ import annotations

import json

import pytest

from flowerclf.cli.main import main
from flowerclf.serving.loadtest import LoadTestConfig, require_loopback, run_loadtest
from tests.helpers.server import LiveServer


def test_loadtest_reports_throughput_and_percentiles(live_server: LiveServer) -> None:
    report = run_loadtest(
        LoadTestConfig(url=live_server.url, requests=60, concurrency=4, warmup=4, baseline=False)
    )
    assert report["completed"] == 60 and report["errors"] == 0
    assert report["statuses"] == {"200": 60}
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert report["throughput_rps"] > 0


def test_loadtest_cli_json(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-q", "loadtest", "--url", live_server.url, "--requests", "20", "--concurrency",
            "2", "--no-baseline", "--json"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["completed"] == 20


@pytest.mark.parametrize("url", ["http://10.0.0.1:80", "https://127.0.0.1:1", "ftp://localhost"])
def test_loadtest_refuses_non_loopback(url: str) -> None:
    with pytest.raises(ValueError):
        require_loopback(url)
