"""What the UI talks to: a running service (``--api``) or a local model package (``--model``).

Both give the same answers and the same readable errors, so the page does not care which.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

EXAMPLES_PACKAGE = "flowerclf.ui"
UI_ENV_API = "FLOWERCLF_UI_API"
UI_ENV_MODEL = "FLOWERCLF_UI_MODEL"


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
    """A running ``flowerclf serve`` at ``url``."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s)

    def _get_json(self, path: str) -> dict[str, Any]:
        response = self._client.get(path)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def info(self) -> dict[str, Any]:
        return self._get_json("/v1/model")

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
                for item in similar.json()["neighbors"]:
                    thumbnail = None
                    if item.get("thumbnail_url"):
                        got = self._client.get(item["thumbnail_url"])
                        thumbnail = got.content if got.status_code == 200 else None
                    neighbours.append(
                        Neighbour(item["id"], item["class"], item["score"], thumbnail)
                    )
        except httpx.HTTPError as exc:
            return Analysis(name, error=f"the service at {self.url} did not answer: {exc}")
        return Analysis(name, prediction=predicted.json(), neighbours=neighbours)


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

        async def run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            prediction = await self._service.predict(data)
            return prediction, await self._service.similar(data, k)

        try:
            prediction, similar = asyncio.run(run())
        except ApiError as exc:
            return Analysis(name, error=exc.message)
        neighbours = []
        for item in similar:
            path = self._service.gallery_file(item["id"])
            thumbnail = path.read_bytes() if path is not None else None
            neighbours.append(Neighbour(item["id"], item["class"], item["score"], thumbnail))
        return Analysis(name, prediction=prediction, neighbours=neighbours)


def preview(data: bytes) -> bytes | None:
    """A browser-safe PNG of an upload (any accepted format), or None if it does not decode."""
    from flowerclf.core.imaging import decode_rgb

    try:
        image = decode_rgb(data).image
    except ValueError:
        return None
    image.thumbnail((512, 512))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
