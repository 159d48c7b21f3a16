"""FastAPI dependencies: the inference service and settings (tests override these)."""

from __future__ import annotations

from fastapi import Request

from flowerclf.serving.errors import ApiError
from flowerclf.serving.service import InferenceService
from flowerclf.serving.settings import ServeSettings


def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_service(request: Request) -> InferenceService:
    """The service loaded in the lifespan; 503 until it is ready."""
    service: InferenceService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise ApiError(503, "not_ready", "the model is not loaded yet")
    return service
