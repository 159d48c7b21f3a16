"""What the UI talks to: a running service (``--api``) or a local model package (``--model``).

Both give the same answers and the same readable errors, so the page does not care which.
What reaches the browser is written for it: the service's own error messages, or a short
sentence for everything else (exception texts, with their local paths, go to the log).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from flowerclf.core.errors import ServiceError
from flowerclf.core.imaging import DEFAULT_MAX_PIXELS, convert_to_rgb

log = logging.getLogger(__name__)

EXAMPLES_PACKAGE = "flowerclf.ui"
UI_ENV_API = "FLOWERCLF_UI_API"
UI_ENV_MODEL = "FLOWERCLF_UI_MODEL"
UI_ENV_API_KEY = "FLOWERCLF_UI_API_KEY"  # sent as X-API-Key to a service that wants one
PREVIEW_SIZE = 512
MAX_THUMBNAIL_BYTES = 2 * 1024 * 1024
# The only thumbnail URLs the UI follows: the service's own relative gallery route. An
# absolute URL in an answer (another host, another scheme) is never fetched.
GALLERY_URL = re.compile(r"/v1/gallery/(\d+)")
INTERNAL_ERROR = "this image could not be analysed (an internal error; see the UI's log)"


class BackendUnavailableError(ServiceError):
    """The model cannot be reached; the message is safe to show in the page."""


@dataclass
class Neighbour:
    id: int
    class_name: str
    score: float
    thumbnail: bytes | None = None


@dataclass
class Analysis:
    """The answer for one image, or the reason there is none."""

    name: str
    prediction: dict[str, Any] | None = None
    neighbours: list[Neighbour] = field(default_factory=list)
    error: str | None = None


class Backend(Protocol):
    def info(self) -> dict[str, Any]: ...

    def analyse(self, name: str, data: bytes, k: int) -> Analysis: ...


def examples() -> dict[str, bytes]:
    """The bundled example photos, name -> JPEG bytes."""
    folder = resources.files(EXAMPLES_PACKAGE) / "examples"
    return {
        entry.name: entry.read_bytes()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".jpg")
    }


class ApiBackend:
    """A running ``flowerclf serve`` at ``url``.

    Args:
        api_key: sent as ``X-API-Key`` when the service requires one.
        transport: an httpx transport (tests pass a mock one).
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 60.0,
        api_key: str | None = None,
        transport: Any = None,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self._client = httpx.Client(
            base_url=self.url, timeout=timeout_s, headers=headers, transport=transport,
            follow_redirects=False,
        )  # fmt: skip

    def info(self) -> dict[str, Any]:
        import httpx

        try:
            response = self._client.get("/v1/model")
        except httpx.HTTPError as exc:
            log.warning("the service at %s did not answer: %r", self.url, exc)
            raise BackendUnavailableError(f"the service did not answer ({_kind(exc)})") from None
        if response.status_code == 401:
            raise BackendUnavailableError(f"the service wants an API key: set {UI_ENV_API_KEY}")
        if response.status_code != 200:
            raise BackendUnavailableError(f"the service answered HTTP {response.status_code}")
        return response.json()  # type: ignore[no-any-return]

    @staticmethod
    def _error(response: Any) -> str:
        try:
            return str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            return f"HTTP {response.status_code}"

    def analyse(self, name: str, data: bytes, k: int) -> Analysis:
        import httpx

        files = {"file": (name, data, "application/octet-stream")}
        try:
            predicted = self._client.post("/v1/predict", files=files)
            if predicted.status_code != 200:
                return Analysis(name, error=self._error(predicted))
            similar = self._client.post("/v1/similar", files=files, params={"k": k})
            neighbours = []
            if similar.status_code == 200:
                neighbours = [self._neighbour(item) for item in similar.json()["neighbors"]]
        except httpx.HTTPError as exc:
            log.warning("the service at %s did not answer: %r", self.url, exc)
            return Analysis(name, error=f"the service did not answer ({_kind(exc)})")
        return Analysis(name, prediction=predicted.json(), neighbours=neighbours)

    def _neighbour(self, item: dict[str, Any]) -> Neighbour:
        return Neighbour(item["id"], item["class"], item["score"], self._thumbnail(item))

    def _thumbnail(self, item: dict[str, Any]) -> bytes | None:
        url = item.get("thumbnail_url")
        match = GALLERY_URL.fullmatch(url) if isinstance(url, str) else None
        if match is None or int(match.group(1)) != int(item["id"]):
            return None
        got = self._client.get(f"/v1/gallery/{int(match.group(1))}")
        if got.status_code != 200 or len(got.content) > MAX_THUMBNAIL_BYTES:
            return None
        return got.content


def _kind(exc: Exception) -> str:
    """A few words on a connection failure, without addresses or library internals."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    return "connection failed"


class LocalBackend:
    """A model package loaded in this process, through the service's own code paths."""

    def __init__(self, model: Path) -> None:
        from flowerclf.serving.service import InferenceService, load_classifier
        from flowerclf.serving.settings import ServeSettings

        settings = ServeSettings(model=model, micro_batch=False)
        self._service = InferenceService(load_classifier(settings), settings)

    def info(self) -> dict[str, Any]:
        return self._service.info

    def analyse(self, name: str, data: bytes, k: int) -> Analysis:
        from flowerclf.serving.errors import ApiError

        try:
            # One decode and one forward pass for both the classes and the neighbours.
            prediction, similar = asyncio.run(self._service.analyse(data, k))
        except ApiError as exc:
            return Analysis(name, error=exc.message)
        except Exception:
            log.exception("analysing %s failed", name)
            return Analysis(name, error=INTERNAL_ERROR)
        neighbours = []
        for item in similar:
            path = self._service.gallery_file(item["id"])
            thumbnail = path.read_bytes() if path is not None else None
            neighbours.append(Neighbour(item["id"], item["class"], item["score"], thumbnail))
        return Analysis(name, prediction=prediction, neighbours=neighbours)


def preview(data: bytes, size: int = PREVIEW_SIZE) -> bytes | None:
    """A browser-safe PNG of an upload, at most ``size`` pixels a side, or None.

    Decoded at reduced size where the format allows (JPEG draft mode scales by 1/2 to
    1/8 while decoding), so a 12-megapixel photo is never held at full size for a preview.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > DEFAULT_MAX_PIXELS:
                return None
            # Ask for the size the thumbnail will have, so draft can pick the largest scale.
            ratio = min(1.0, size / max(image.width, image.height))
            image.draft(
                "RGB", (max(1, int(image.width * ratio)), max(1, int(image.height * ratio)))
            )
            upright = ImageOps.exif_transpose(image) or image
            upright.thumbnail((size, size), reducing_gap=2.0)
            rgb = convert_to_rgb(upright)
            buffer = io.BytesIO()
            rgb.save(buffer, "PNG")
    except Exception:  # whatever fails here was reported by the analysis already
        return None
    return buffer.getvalue()
