"""Service settings: command-line flags and ``FLOWERCLF_SERVE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowerclf.core.hardware import decode_threads as cpu_decode_threads
from flowerclf.core.imaging import DEFAULT_MAX_PIXELS
from flowerclf.serving import ENV_PREFIX


class ServeSettings(BaseSettings):
    """Everything the service can be told; each field is also ``FLOWERCLF_SERVE_<NAME>``.

    Example: ``FLOWERCLF_SERVE_MODEL=models/tf_flowers FLOWERCLF_SERVE_PORT=9000``.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    model: Path | None = Field(None, description="model package directory (flowerclf export)")
    similar_index: Path | None = Field(
        None,
        description="similarity index directory (flowerclf index build) that /v1/similar "
        "searches instead of the package's training images",
    )
    verify_package: bool = Field(
        True, description="check the package's files against their sha256 at load (false: dev)"
    )
    backend: str = Field(
        "auto",
        description="auto (fastest here, measured once) | onnx | onnx_int8 | openvino | "
        "openvino_int8 | torch | tensorrt",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    inference_threads: int | None = Field(
        None, ge=1, description="ONNX Runtime / torch threads (default: physical cores)"
    )
    max_body_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="largest request body accepted (413 above)"
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="largest image in pixels (decompression bombs)"
    )
    max_batch_files: int = Field(32, ge=1, description="most images in one /v1/predict/batch")
    max_k: int = Field(50, ge=1, description="most neighbours /v1/similar returns")
    micro_batch: bool = Field(
        False,
        description="group concurrent single-image requests into one forward pass (helps on "
        "GPUs; on a 2-core CPU it measured no faster and used twice the memory)",
    )
    micro_batch_size: int = Field(8, ge=1, le=256)
    micro_batch_wait_ms: float = Field(
        2.0, ge=0.0, le=1000.0, description="longest a request waits for others to join"
    )
    decode_threads: int = Field(
        default_factory=cpu_decode_threads, ge=1, le=64,
        description="threads decoding uploads (default: one per CPU, at most 8)",
    )  # fmt: skip
    large_image_pixels: int = Field(
        12_000_000,
        ge=1,
        description="images with more pixels are decoded one at a time in a lane of their "
        "own, so that they neither pile up in memory nor delay ordinary photos",
    )
    reject: bool = Field(
        True, description="answer is_known=false for images unlike every training class"
    )
    reject_threshold: float | None = Field(
        None, description="override the package's unknown-score threshold"
    )
    log_level: str = "info"

    # --- overload: every wait is bounded, so a flood gets 503s instead of a growing queue --
    max_active_requests: int = Field(
        8, ge=1, le=1024, description="inference requests (POST /v1/*) worked on at once"
    )
    max_queued_requests: int = Field(
        64, ge=0, le=100_000, description="inference requests waiting for a slot (503 above)"
    )
    queue_timeout_s: float = Field(
        15.0, gt=0.0, le=3600.0, description="longest wait for a slot before a 503"
    )
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After sent with each 503")
    body_timeout_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="time to receive a whole request body (408 after)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0.0, le=3600.0,
        description="time to receive a request's headers (new or kept-alive connections "
        "that send nothing are closed after it)",
    )  # fmt: skip
    keep_alive_timeout_s: float = Field(
        5.0, gt=0.0, le=3600.0, description="idle keep-alive connections close after it"
    )
    max_connections: int = Field(
        256, ge=1, le=100_000, description="open connections and tasks before uvicorn's 503"
    )

    # --- exposure ----------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None,
        description="if set, every route but /health and /ready needs 'Authorization: "
        "Bearer KEY' or 'X-API-Key: KEY'",
    )
    docs: bool = Field(True, description="serve /docs, /redoc and /openapi.json")
    metrics: bool = Field(True, description="serve Prometheus metrics at /metrics")

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: object) -> object:
        # FLOWERCLF_SERVE_API_KEY= (set but empty) in a compose file means "no key", not a
        # key that every client could match by sending an empty header.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None
