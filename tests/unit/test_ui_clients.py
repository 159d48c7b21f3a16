"""The UI's backends without a browser: what they fetch, what errors they show, how much
they decode (issue 12, item 15)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageFile

from flowerclf.ui.clients import ApiBackend, BackendUnavailableError, LocalBackend, preview
from tests.helpers.colour_package import split


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _mock_service(seen: list[str], thumbnail_url: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/v1/predict":
            return httpx.Response(200, json={"predicted_class": "red", "confidence": 1.0,
                                             "all_predictions": {"red": 1.0}})  # fmt: skip
        if request.url.path == "/v1/similar":
            neighbour = {"id": 7, "class": "red", "score": 0.9, "thumbnail_url": thumbnail_url}
            return httpx.Response(200, json={"k": 1, "neighbors": [neighbour]})
        if request.url.path == "/v1/gallery/7":
            return httpx.Response(200, content=b"jpeg bytes")
        return httpx.Response(404)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    "url", ["http://attacker.example/x.jpg", "//attacker.example/v1/gallery/7",
            "/v1/gallery/8", "/v1/gallery/7?x=http://a", "file:///etc/passwd"],
)  # fmt: skip
def test_api_backend_follows_only_its_own_relative_gallery_urls(url: str) -> None:
    seen: list[str] = []
    backend = ApiBackend("http://service:8000", transport=_mock_service(seen, url))
    analysis = backend.analyse("a.png", png(split("red", "green")), 1)
    assert analysis.neighbours[0].thumbnail is None
    assert all(u.startswith("http://service:8000/v1/") for u in seen), seen
    assert not any("gallery" in u for u in seen), seen


def test_api_backend_fetches_a_relative_gallery_url_with_the_api_key() -> None:
    seen: list[str] = []
    keys: list[str | None] = []
    inner = _mock_service(seen, "/v1/gallery/7")

    def handle(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("x-api-key"))
        return inner.handle_request(request)

    backend = ApiBackend(
        "http://service:8000", api_key="k-123", transport=httpx.MockTransport(handle)
    )
    analysis = backend.analyse("a.png", png(split("red", "green")), 1)
    assert analysis.neighbours[0].thumbnail == b"jpeg bytes"
    assert keys == ["k-123"] * 3


def test_api_backend_errors_carry_no_exception_text() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] internal-host-10.1.2.3 refused", request=request)

    backend = ApiBackend("http://service:8000", transport=httpx.MockTransport(refuse))
    analysis = backend.analyse("a.png", b"x", 1)
    assert analysis.error == "the service did not answer (connection refused or host unreachable)"
    with pytest.raises(BackendUnavailableError) as raised:
        backend.info()
    assert "internal-host" not in str(raised.value)


def test_local_backend_decodes_each_upload_once(
    colour_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(colour_package)
    calls: list[int] = []
    service = backend._service
    real = service._prepare_sync

    def counting(data: bytes, *args: Any) -> Any:
        calls.append(len(data))
        return real(data, *args)

    monkeypatch.setattr(service, "_prepare_sync", counting)
    analysis = backend.analyse("a.png", png(split("blue", "red")), 3)
    assert analysis.prediction is not None and analysis.prediction["predicted_class"] == "blue"
    assert len(analysis.neighbours) == 3
    assert len(calls) == 1


def test_preview_never_decodes_a_photo_at_full_size(monkeypatch: pytest.MonkeyPatch) -> None:
    photo = Image.new("RGB", (3000, 2000), (200, 30, 30))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    loaded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def recording_load(self: ImageFile.ImageFile) -> Any:
        loaded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    shown = preview(buffer.getvalue())
    assert shown is not None
    assert max(Image.open(io.BytesIO(shown)).size) <= 512
    assert loaded and max(w * h for w, h in loaded) <= 1000 * 1000, loaded
