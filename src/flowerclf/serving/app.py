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
from flowerclf.serving.errors import install_error_handlers
from flowerclf.serving.limits import BodySizeLimitMiddleware
from flowerclf.serving.metrics import MetricsMiddleware, ServiceMetrics
from flowerclf.serving.routes import ops, v1
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

    app = FastAPI(
        title="flowerclf",
        version=__version__,
        summary="Flower image classification: predict, embed, find similar training images.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = None
    install_error_handlers(app)
    app.include_router(v1)
    app.include_router(ops)
    # The last added is the outermost: metrics see every response, the size limit's 413 too.
    app.add_middleware(BodySizeLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (each worker process reads the environment)."""
    return create_app(ServeSettings())
