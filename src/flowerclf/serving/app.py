"""The app factory: ``create_app(settings)`` builds a FastAPI app; nothing runs at import.

The model is loaded once in the lifespan (``loader(settings)``, by default the model
package in ``settings.model``) and reached through the :func:`~flowerclf.serving.deps.
get_service` dependency, which tests may override.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from flowerclf import __version__
from flowerclf.serving.auth import ApiKeyMiddleware
from flowerclf.serving.errors import install_error_handlers
from flowerclf.serving.limits import AdmissionMiddleware, BodySizeLimitMiddleware
from flowerclf.serving.metrics import MetricsMiddleware, ServiceMetrics
from flowerclf.serving.routes import metrics_routes, ops, v1
from flowerclf.serving.service import ClassifierLike, InferenceService, load_classifier
from flowerclf.serving.settings import ServeSettings

log = logging.getLogger(__name__)

Loader = Callable[[ServeSettings], ClassifierLike]


def create_app(settings: ServeSettings | None = None, loader: Loader | None = None) -> FastAPI:
    """Build the service.

    Args:
        settings: defaults to :class:`ServeSettings` read from the environment.
        loader: returns the classifier to serve (default: load ``settings.model``).
    """
    settings = settings or ServeSettings()
    load = loader or load_classifier
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        classifier = load(settings)
        service = InferenceService(classifier, settings, on_batch=metrics.observe_batch)
        await service.start()
        app.state.service = service
        metrics.model_loaded.set(1)
        log.info(
            "serving %s (%s, %d classes)",
            service.info.get("name"), classifier.backend_name, len(service.classes),
        )  # fmt: skip
        try:
            yield
        finally:
            metrics.model_loaded.set(0)
            app.state.service = None
            await service.stop()
            metrics.worker_stopped()

    docs = {} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(
        title="flowerclf",
        version=__version__,
        summary="Flower image classification: predict, embed, find similar training images.",
        lifespan=lifespan,
        **docs,  # type: ignore[arg-type]
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    install_error_handlers(app)
    app.include_router(v1)
    app.include_router(ops)
    if settings.metrics:
        app.include_router(metrics_routes)
    _add_middleware(app, settings, metrics)
    return app


def _add_middleware(app: FastAPI, settings: ServeSettings, metrics: ServiceMetrics) -> None:
    """From the outside in: metrics (see every answer, the refusals too), the API key
    (before a request can take a slot), admission (bounded waiting), body limits."""
    app.add_middleware(
        BodySizeLimitMiddleware, limit=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(
        AdmissionMiddleware,
        max_active=settings.max_active_requests,
        max_queued=settings.max_queued_requests,
        queue_timeout_s=settings.queue_timeout_s,
        retry_after_s=settings.retry_after_s,
    )
    api_key = settings.api_key_value()
    if api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # the last added is the outermost


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (each worker process reads the environment)."""
    return create_app(ServeSettings())
