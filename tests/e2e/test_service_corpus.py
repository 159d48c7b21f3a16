"""The bad- and unusual-input corpus against a real ``flowerclf serve`` process."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import numpy as np
import pytest

from flowerclf import Classifier
from tests.helpers.corpus import Case, corpus
from tests.helpers.server import LiveServer

CASES = corpus()


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)
    assert sum(case.status == 200 for case in CASES) >= 20


def _send(client: httpx.Client, case: Case) -> httpx.Response:
    kwargs: dict[str, Any] = {"params": case.params, "headers": case.headers}
    if case.files is not None:
        kwargs["files"] = case.files
    elif case.json is not None:
        kwargs["json"] = case.json
    elif case.content is not None:
        kwargs["content"] = case.content
    return client.request(case.method, case.path, **kwargs)


def _check(case: Case, response: httpx.Response, classifier: Classifier) -> None:
    assert response.status_code < 500, f"{case.name}: server error {response.text}"
    assert response.status_code == case.status, f"{case.name}: {response.text[:300]}"
    if response.headers.get("content-type", "").startswith("image/"):
        return
    body = response.json()
    if case.status >= 400:
        error = body["error"]
        assert set(error) == {"code", "message", "status", "details"}, case.name
        assert error["status"] == case.status
        assert error["code"] == case.code, f"{case.name}: {error}"
        assert error["message"]
        return
    if case.expected_class is not None:
        assert body["predicted_class"] == case.expected_class, f"{case.name}: {body}"
    if case.reference is not None:
        expected = classifier.predict(case.reference).all_predictions
        got = body["all_predictions"]
        diff = max(abs(got[c] - expected[c]) for c in expected)
        assert diff <= case.tolerance, f"{case.name}: {got} vs reference {expected}"
    if case.check is not None:
        case.check(body)


@pytest.fixture(scope="module")
def classifier(colour_package: Any) -> Classifier:
    return Classifier.load(colour_package)


@pytest.fixture(scope="module")
def trap() -> Any:
    """A listening socket that records any connection: the server must never fetch URLs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    hits: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                hits.append(server.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join(timeout=2)
    server.close()


def test_corpus_against_real_server(
    live_server: LiveServer, classifier: Classifier, trap: Any
) -> None:
    port, hits = trap
    failures = []
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        for case in CASES:
            if case.json and isinstance(case.json, dict) and "127.0.0.1:9" in str(case.json):
                case.json = {"image": f"http://127.0.0.1:{port}/flower.jpg"}
            try:
                _check(case, _send(client, case), classifier)
            except (AssertionError, KeyError, ValueError) as exc:
                failures.append(f"{case.name}: {exc}")
        assert client.get("/health").status_code == 200
        metrics = client.get("/metrics").text
    assert live_server.alive(), live_server.output()[-3000:]
    assert not failures, "\n".join(failures)
    assert not hits, "the server connected to a URL given by a client"
    assert 'status="5' not in metrics
    assert "Traceback" not in live_server.output(), live_server.output()[-3000:]


def test_concurrent_mixed_traffic_keeps_server_up(live_server: LiveServer) -> None:
    """Good and bad uploads in parallel threads: every answer < 500, the server survives."""
    sample = [c for c in CASES if c.path == "/v1/predict" and c.files][:20]
    statuses: list[int] = []

    def worker() -> None:
        with httpx.Client(base_url=live_server.url, timeout=60) as client:
            for case in sample:
                statuses.append(_send(client, case).status_code)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == 4 * len(sample)
    assert max(statuses) < 500
    assert np.mean([s == 200 for s in statuses]) > 0.3
    assert live_server.alive()
