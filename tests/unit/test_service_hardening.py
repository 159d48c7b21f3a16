"""Issue 12 regressions, in process: overload, deadlines, disconnects, auth, exposure, index.

Each test is named after what it guards; each failed (or hung, bounded by a timeout)
before the fix it guards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flowerclf.core.errors import PackageError
from flowerclf.serving.app import create_app
from flowerclf.serving.service import ClassifierLike, PackageClassifier, load_classifier
from flowerclf.serving.settings import ServeSettings
from tests.helpers.colour_package import solid
from tests.helpers.corpus import encode

Message = dict[str, Any]
RED = encode(solid("red"), "PNG")
BOUNDARY = "hardening-boundary"


def multipart(data: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def scope(path: str = "/v1/predict", headers: list[tuple[bytes, bytes]] | None = None) -> Message:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": headers
        or [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())],
    }  # fmt: skip


async def call_asgi(
    app: FastAPI, receive: Callable[[], Awaitable[Message]], timeout_s: float = 20.0
) -> list[Message]:
    """Run one request straight through the ASGI app; the messages it sent."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope(), receive, send), timeout_s)
    return sent


def status_of(sent: list[Message]) -> int:
    return next(int(m["status"]) for m in sent if m["type"] == "http.response.start")


def json_of(sent: list[Message]) -> dict[str, Any]:
    return json.loads(
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    )


def headers_of(sent: list[Message]) -> dict[str, str]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    return {k.decode().lower(): v.decode() for k, v in start["headers"]}


def assert_error(body: dict[str, Any], status: int, code: str) -> None:
    assert set(body["error"]) == {"code", "message", "status", "details"}
    assert (body["error"]["status"], body["error"]["code"]) == (status, code), body


@pytest.fixture
def app_on(colour_package: Path) -> Iterator[Callable[..., TestClient]]:
    """``app_on(**settings)``: a started TestClient on the colour package."""
    clients: list[TestClient] = []

    def make(loader: Any = None, **overrides: Any) -> TestClient:
        app = create_app(ServeSettings(model=colour_package, **overrides), loader=loader)
        client = TestClient(app).__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


# --- bad bodies --------------------------------------------------------------------------


def test_deeply_nested_json_is_a_422_not_a_recursion_500(app_on: Callable[..., TestClient]) -> None:
    client = app_on()
    response = client.post(
        "/v1/predict", content=b"[" * 200_000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert_error(response.json(), 422, "validation_error")
    assert "nested too deeply" in response.json()["error"]["message"]


def test_client_disconnect_is_logged_at_debug_and_not_counted_as_5xx(
    app_on: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = app_on()
    body = multipart(RED)
    messages = iter([
        {"type": "http.request", "body": body[: len(body) // 2], "more_body": True},
        {"type": "http.disconnect"},
    ])  # fmt: skip

    async def receive() -> Message:
        return next(messages, {"type": "http.disconnect"})

    caplog.set_level(logging.DEBUG, logger="flowerclf")
    sent = client.portal.call(call_asgi, client.app, receive)
    assert status_of(sent) == 499
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert any("client disconnected" in r.getMessage() for r in caplog.records)
    metrics = client.get("/metrics").text
    assert 'route="/v1/predict",status="499"' in metrics
    assert 'status="500"' not in metrics


def test_a_stalled_body_gets_408_within_the_body_deadline(
    app_on: Callable[..., TestClient],
) -> None:
    client = app_on(body_timeout_s=0.5)
    body = multipart(RED)
    first = True

    async def receive() -> Message:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body[:100], "more_body": True}
        await asyncio.sleep(3600)  # the client never sends the rest
        raise AssertionError("unreachable")

    sent = client.portal.call(call_asgi, client.app, receive)
    assert status_of(sent) == 408
    assert_error(json_of(sent), 408, "request_timeout")
    assert headers_of(sent)["connection"] == "close"


# --- admission: bounded waiting, then 503 + Retry-After ------------------------------------


class GatedClassifier:
    """Wraps the real classifier; once ``armed``, every forward pass waits for ``gate``."""

    def __init__(self, inner: ClassifierLike) -> None:
        self.inner = inner
        self.armed = False
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.armed:
            self.entered.set()
            self.gate.wait(timeout=10)
        return self.inner.run_arrays(batch)


async def _concurrently(
    app: FastAPI, count: int, gated: GatedClassifier, refused: int
) -> list[httpx.Response]:
    """One request takes the only slot; then ``count`` more are sent and the gate opens
    once ``refused`` of them have been answered (the ones that cannot wait)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        first = asyncio.create_task(http.post("/v1/predict", files={"file": ("a.png", RED)}))
        while not gated.entered.is_set():
            await asyncio.sleep(0.01)
        rest = [
            asyncio.create_task(http.post("/v1/predict", files={"file": ("a.png", RED)}))
            for _ in range(count)
        ]
        health = await http.get("/health")  # the probes never wait for a slot
        deadline = asyncio.get_running_loop().time() + 20
        while sum(t.done() for t in rest) < refused:
            assert asyncio.get_running_loop().time() < deadline, "refusals never came"
            await asyncio.sleep(0.01)
        gated.gate.set()
        others = await asyncio.wait_for(asyncio.gather(*rest), 20)
        return [await asyncio.wait_for(first, 20), health, *others]


def _gated_client(app_on: Callable[..., TestClient], **overrides: Any) -> tuple[TestClient, Any]:
    holder: dict[str, GatedClassifier] = {}

    def loader(settings: ServeSettings) -> ClassifierLike:
        holder["gated"] = GatedClassifier(load_classifier(settings))
        return holder["gated"]  # type: ignore[return-value]

    client = app_on(loader=loader, **overrides)
    holder["gated"].armed = True
    return client, holder["gated"]


def test_requests_over_the_queue_bound_get_503_with_retry_after(
    app_on: Callable[..., TestClient],
) -> None:
    client, gated = _gated_client(app_on, max_active_requests=1, max_queued_requests=2,
                                  retry_after_s=3)  # fmt: skip
    try:
        first, health, *others = client.portal.call(_concurrently, client.app, 5, gated, 3)
    finally:
        gated.gate.set()
    assert first.status_code == 200 and health.status_code == 200
    statuses = sorted(r.status_code for r in others)
    assert statuses == [200, 200, 503, 503, 503], statuses
    refused = next(r for r in others if r.status_code == 503)
    assert refused.headers["retry-after"] == "3"
    assert_error(refused.json(), 503, "overloaded")


def test_a_request_waits_for_a_slot_at_most_the_queue_timeout(
    app_on: Callable[..., TestClient],
) -> None:
    client, gated = _gated_client(
        app_on, max_active_requests=1, max_queued_requests=10, queue_timeout_s=0.3
    )
    try:
        first, _, waited = client.portal.call(_concurrently, client.app, 1, gated, 1)
    finally:
        gated.gate.set()
    assert first.status_code == 200
    assert waited.status_code == 503 and "retry-after" in waited.headers
    assert "no slot free within 0.3 s" in waited.json()["error"]["message"]


# --- authentication and exposure ------------------------------------------------------------


def test_api_key_guards_every_route_but_the_probes(app_on: Callable[..., TestClient]) -> None:
    client = app_on(api_key="s3cret-key")
    for path in ("/v1/classes", "/v1/model", "/metrics", "/docs", "/openapi.json"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert_error(response.json(), 401, "unauthorized")
    refused = client.post("/v1/predict", files={"file": ("a.png", RED)})
    assert refused.status_code == 401
    assert client.get("/v1/classes", headers={"X-API-Key": "wrong"}).status_code == 401
    assert (
        client.get("/v1/classes", headers={"Authorization": "Basic s3cret-key"}).status_code == 401
    )
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
    bearer = {"Authorization": "Bearer s3cret-key"}
    assert client.get("/v1/classes", headers=bearer).status_code == 200
    predicted = client.post(
        "/v1/predict", files={"file": ("a.png", RED)}, headers={"X-API-Key": "s3cret-key"}
    )
    assert predicted.json()["predicted_class"] == "red"


def test_an_empty_api_key_setting_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWERCLF_SERVE_API_KEY", "  ")
    assert ServeSettings().api_key is None
    monkeypatch.setenv("FLOWERCLF_SERVE_API_KEY", "zq-secret-42")
    settings = ServeSettings()
    assert settings.api_key_value() == "zq-secret-42" and "zq-secret" not in repr(settings)


def test_docs_and_metrics_can_be_switched_off(app_on: Callable[..., TestClient]) -> None:
    client = app_on(docs=False, metrics=False)
    for path in ("/docs", "/redoc", "/openapi.json", "/metrics"):
        assert client.get(path).status_code == 404, path
    assert client.post("/v1/predict", files={"file": ("a.png", RED)}).status_code == 200


# --- the similarity index loads before /ready ---------------------------------------------


def _package_copy(colour_package: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(colour_package, tmp_path / "package"))


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_damaged_embedding_index_stops_the_start_instead_of_500s(
    damage: str, colour_package: Path, tmp_path: Path
) -> None:
    package = _package_copy(colour_package, tmp_path)
    index = package / "embeddings.npz"
    if damage == "missing":
        index.unlink()
    else:
        index.write_bytes(index.read_bytes()[:200])
    app = create_app(ServeSettings(model=package))
    with pytest.raises(PackageError, match="embeddings"), TestClient(app):
        pass


def test_a_package_without_an_index_answers_similar_with_404_and_is_ready(
    colour_package: Path, tmp_path: Path
) -> None:
    package = _package_copy(colour_package, tmp_path)
    descriptor = json.loads((package / "flowerclf-model.json").read_text())
    del descriptor["files"]["embeddings"]
    (package / "flowerclf-model.json").write_text(json.dumps(descriptor))
    with TestClient(create_app(ServeSettings(model=package))) as client:
        assert client.get("/ready").status_code == 200
        response = client.post("/v1/similar", files={"file": ("a.png", RED)})
        assert response.status_code == 404
        assert_error(response.json(), 404, "not_found")
        assert client.post("/v1/predict", files={"file": ("a.png", RED)}).status_code == 200


def test_package_classifier_loads_the_index_eagerly(colour_package: Path) -> None:
    classifier = load_classifier(ServeSettings(model=colour_package))
    assert isinstance(classifier, PackageClassifier)
    assert classifier.load_index() is True
    assert classifier._clf._index is not None  # loaded now, not at the first /v1/similar
    classifier.close()


# --- large images: their own lane, memory handed back -----------------------------------------


def test_large_images_are_decoded_in_their_own_lane_and_their_memory_released(
    app_on: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowerclf.serving.service as service_module

    released: list[str] = []
    monkeypatch.setattr(
        service_module,
        "release_free_memory",
        lambda: released.append(threading.current_thread().name),
    )
    client = app_on(large_image_pixels=50 * 50)
    small = encode(solid("red", (40, 40)), "PNG")
    large = encode(solid("green", (80, 80)), "PNG")
    assert (
        client.post("/v1/predict", files={"file": ("s.png", small)}).json()["predicted_class"]
        == "red"
    )
    assert released == []
    body = client.post("/v1/predict", files={"file": ("l.png", large)}).json()
    assert body["predicted_class"] == "green"
    truncated = client.post("/v1/predict", files={"file": ("t.png", large[:60])})
    assert truncated.status_code == 422
    assert len(released) == 2 and all(n.startswith("flowerclf-decode-large") for n in released)


def test_release_free_memory_is_safe_to_call() -> None:
    from flowerclf.serving.memory import header_pixels, release_free_memory

    release_free_memory()
    assert header_pixels(encode(solid("red", (30, 20)), "PNG")) == 600
    assert header_pixels(b"not an image") == 0
