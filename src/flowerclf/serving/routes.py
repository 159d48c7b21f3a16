"""HTTP routes: ``/v1/*`` for inference and model facts, ``/health``, ``/ready``, ``/metrics``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from flowerclf.serving.deps import get_service, get_settings
from flowerclf.serving.errors import ApiError
from flowerclf.serving.schemas import (
    Base64EmbedRequest,
    Base64ImageRequest,
    Base64SimilarRequest,
    BatchResponse,
    ClassesResponse,
    EmbeddingResponse,
    ErrorResponse,
    HealthResponse,
    ModelResponse,
    PredictionResponse,
    ReadyResponse,
    SimilarResponse,
)
from flowerclf.serving.service import InferenceService
from flowerclf.serving.settings import ServeSettings
from flowerclf.serving.uploads import JSON, MULTIPART, many_images, single_image

DEFAULT_K = 5

Service = Annotated[InferenceService, Depends(get_service)]
Settings = Annotated[ServeSettings, Depends(get_settings)]
Tta = Annotated[
    bool,
    Query(description="test-time augmentation: average the image with its mirror image "
          "(about twice the compute)"),
]  # fmt: skip
TopK = Annotated[
    int | None, Query(ge=1, le=1000, description="also return the k most probable classes")
]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


def _upload_body(json_model: type, field: str = "file", many: bool = False) -> dict[str, Any]:
    """OpenAPI request body for routes that parse uploads by hand (multipart and/or JSON)."""
    binary = {"type": "string", "format": "binary"}
    multipart = {
        "type": "object",
        "required": [field],
        "properties": {
            field: {"type": "array", "items": binary, "minItems": 1} if many else binary
        },
    }
    content: dict[str, Any] = {MULTIPART: {"schema": multipart}}
    if not many:
        content[JSON] = {"schema": json_model.model_json_schema()}  # type: ignore[attr-defined]
    return {"requestBody": {"required": True, "content": content}}


IMAGE_ERRORS = _errors(408, 413, 415, 422, 503)  # 408: body deadline, 503: overloaded

v1 = APIRouter(prefix="/v1", tags=["inference"])
ops = APIRouter(tags=["operations"])
metrics_routes = APIRouter(tags=["operations"])  # left out with FLOWERCLF_SERVE_METRICS=false


@v1.post(
    "/predict",
    response_model=PredictionResponse,
    response_model_exclude_none=True,
    responses=IMAGE_ERRORS,
    openapi_extra=_upload_body(Base64ImageRequest),
    summary="Classify one image (multipart field 'file', or JSON {'image': base64})",
)
async def predict(
    request: Request, service: Service, top_k: TopK = None, tta: Tta = False
) -> Response:
    upload, body = await single_image(request, Base64ImageRequest)
    if body is not None and body.top_k is not None:
        top_k = body.top_k
    return JSONResponse(await service.predict(upload.data, top_k, tta))


@v1.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses=IMAGE_ERRORS,
    openapi_extra=_upload_body(Base64ImageRequest, "files", many=True),
    summary="Classify several images (multipart field 'files', repeated); per-image errors",
)
async def predict_batch(
    request: Request,
    service: Service,
    settings: Settings,
    top_k: TopK = None,
    tta: Tta = False,
) -> Response:
    uploads = await many_images(request, settings.max_batch_files)
    outcomes = await service.predict_many([u.data for u in uploads], top_k, tta)
    results = []
    for index, (upload, outcome) in enumerate(zip(uploads, outcomes, strict=True)):
        item: dict[str, Any] = {"index": index, "filename": upload.filename}
        if isinstance(outcome, ApiError):
            item |= {"ok": False, "error": outcome.body()["error"]}
        else:
            item |= {"ok": True, "prediction": outcome}
        results.append(item)
    failed = sum(not r["ok"] for r in results)
    return JSONResponse({"count": len(results), "failed": failed, "results": results})


@v1.post(
    "/embed",
    response_model=EmbeddingResponse,
    responses=IMAGE_ERRORS,
    openapi_extra=_upload_body(Base64EmbedRequest),
    summary="L2-normalised embedding of one image",
)
async def embed(request: Request, service: Service) -> Response:
    upload, _ = await single_image(request, Base64EmbedRequest)
    vector = await service.embed(upload.data)
    values = [round(float(v), 6) for v in vector]
    return JSONResponse({"dim": len(values), "embedding": values})


@v1.post(
    "/similar",
    response_model=SimilarResponse,
    response_model_exclude_none=True,
    responses=IMAGE_ERRORS | _errors(404),
    openapi_extra=_upload_body(Base64SimilarRequest),
    summary="The k most similar training images (cosine similarity of embeddings)",
)
async def similar(
    request: Request,
    service: Service,
    settings: Settings,
    k: Annotated[int | None, Query(ge=1, description="number of neighbours")] = None,
) -> Response:
    upload, body = await single_image(request, Base64SimilarRequest)
    if body is not None and body.k is not None:
        k = body.k
    k = k or DEFAULT_K
    if k > settings.max_k:
        raise ApiError(
            422, "validation_error", f"k={k} is over the limit of {settings.max_k}",
            {"max_k": settings.max_k},
        )  # fmt: skip
    neighbors = await service.similar(upload.data, k)
    return JSONResponse({"k": len(neighbors), "neighbors": neighbors})


@v1.get(
    "/gallery/{image_id}",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}, **_errors(404, 422, 503)},
    summary="Thumbnail of a training image (ids from /v1/similar)",
)
async def gallery(service: Service, image_id: Annotated[int, Path(ge=0, le=2**62)]) -> FileResponse:
    path = service.gallery_file(image_id)
    if path is None:
        raise ApiError(404, "not_found", f"no gallery image with id {image_id}")
    return FileResponse(path, media_type="image/jpeg")


@v1.get("/classes", response_model=ClassesResponse, responses=_errors(503))
async def classes(service: Service) -> dict[str, Any]:
    return {"count": len(service.classes), "classes": service.classes}


@v1.get("/model", response_model=ModelResponse, responses=_errors(503))
async def model(service: Service) -> dict[str, Any]:
    """Name, version, classes, preprocessing, metrics and backend of the loaded model."""
    return service.info


@ops.get("/health", response_model=HealthResponse)
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@ops.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def ready(request: Request) -> Response:
    """Readiness: the model is loaded and warmed up."""
    service: InferenceService | None = getattr(request.app.state, "service", None)
    if service is None:
        return JSONResponse({"ready": False, "model": None}, status_code=503)
    return JSONResponse({"ready": True, "model": str(service.info.get("name", ""))})


@metrics_routes.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
