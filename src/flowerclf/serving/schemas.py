"""Request and response bodies (pydantic): the OpenAPI schema at ``/docs`` comes from here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. invalid_image")
    message: str = Field(description="what went wrong, for people")
    status: int = Field(description="the HTTP status of the response")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Base64ImageRequest(BaseModel):
    """JSON alternative to a multipart upload."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="the encoded image file (JPEG, PNG...), base64", min_length=1)
    top_k: int | None = Field(None, ge=1, le=1000, description="also return the k best classes")


class Base64SimilarRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="the encoded image file, base64", min_length=1)
    k: int | None = Field(None, ge=1, description="number of neighbours (default 5)")


class Base64EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="the encoded image file, base64", min_length=1)


class TopKEntry(BaseModel):
    class_: str = Field(alias="class")
    probability: float


class PredictionResponse(BaseModel):
    """Same JSON as ``flowerclf predict`` prints."""

    predicted_class: str = Field(description="the most probable class, even when unknown")
    confidence: float = Field(ge=0.0, le=1.0, description="calibrated probability")
    all_predictions: dict[str, float]
    is_known: bool = Field(
        True, description="false: the image is not like any class this model knows"
    )
    unknown_score: float | None = Field(
        None, description="higher = less like the training classes; null: no rejection"
    )
    verdict: str | None = Field(None, description="'not a flower this model knows' if unknown")
    top_k: list[TopKEntry] | None = None


class BatchItem(BaseModel):
    index: int = Field(description="position of the file in the request")
    filename: str | None = None
    ok: bool
    prediction: PredictionResponse | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    count: int
    failed: int
    results: list[BatchItem]


class EmbeddingResponse(BaseModel):
    dim: int
    embedding: list[float] = Field(description="L2-normalised image embedding")


class NeighborResponse(BaseModel):
    id: int = Field(description="training image id (dataset manifest)")
    class_: str = Field(alias="class")
    score: float = Field(description="cosine similarity")
    thumbnail_url: str | None = Field(None, description="GET this for a small JPEG, if exported")


class SimilarResponse(BaseModel):
    k: int
    neighbors: list[NeighborResponse]


class ClassesResponse(BaseModel):
    count: int
    classes: list[str]


class ModelResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    backend: str
    classes: list[str]
    preprocess: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)


class HealthResponse(BaseModel):
    status: str = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    model: str | None = None
