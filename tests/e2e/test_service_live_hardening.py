"""Issue 12 regressions against a real ``flowerclf serve``: what only a socket can show."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.server import LiveServer, run_server

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def strict_server(colour_package: Path) -> Iterator[LiveServer]:
    extra = ["--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S)]
    with run_server(colour_package, extra) as server:
        yield server


def _connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """True if the server closes ``sock`` (EOF or reset) within ``within_s`` seconds."""
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass  # a response before the close is fine; the close is what counts
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def _upload_head(length: int) -> bytes:
    return (
        "POST /v1/predict HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def test_silent_and_slow_header_connections_are_closed_after_the_header_timeout(
    strict_server: LiveServer,
) -> None:
    silent = [_connect(strict_server) for _ in range(30)]
    dribbling = [_connect(strict_server) for _ in range(5)]
    for sock in dribbling:
        sock.sendall(b"GET /v1/classes HTTP/1.1\r\nHost: x\r\n")  # never ends the head
    start = time.monotonic()
    try:
        closed = [_closed_by_server(s, HEADER_TIMEOUT_S + 4) for s in silent + dribbling]
    finally:
        for sock in silent + dribbling:
            sock.close()
    assert all(closed), f"{closed.count(False)} connections still open"
    assert time.monotonic() - start < HEADER_TIMEOUT_S + 5
    assert httpx.get(f"{strict_server.url}/ready", timeout=5).status_code == 200


def test_a_kept_alive_connection_still_serves_requests_within_the_timeout(
    strict_server: LiveServer,
) -> None:
    with httpx.Client(base_url=strict_server.url, timeout=5) as client:
        for _ in range(3):
            assert client.get("/v1/classes").status_code == 200
            time.sleep(HEADER_TIMEOUT_S / 3)


def test_a_stalled_upload_gets_408_and_the_connection_closes(strict_server: LiveServer) -> None:
    sock = _connect(strict_server)
    try:
        sock.sendall(_upload_head(100_000) + b"--b\r\n")
        sock.settimeout(BODY_TIMEOUT_S + 5)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"request_timeout"' in answer or _closed_by_server(sock, 5)
    finally:
        sock.close()


def test_aborted_uploads_log_no_tracebacks_and_count_no_5xx(strict_server: LiveServer) -> None:
    for _ in range(20):
        sock = _connect(strict_server)
        sock.sendall(_upload_head(200_000) + b"--b\r\nContent-Disposition: form-data; ")
        sock.close()
    time.sleep(1.0)  # let the server notice every disconnect
    metrics = httpx.get(f"{strict_server.url}/metrics", timeout=5).text
    assert not re.search(r'status="5\d\d"', metrics), metrics
    output = strict_server.output()
    assert "Traceback" not in output, output[-3000:]
    assert "Exception in ASGI application" not in output
