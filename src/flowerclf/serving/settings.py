"""Service settings: command-line flags and ``FLOWERCLF_SERVE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowerclf.core.imaging import DEFAULT_MAX_PIXELS
from flowerclf.serving import ENV_PREFIX


class ServeSettings(BaseSettings):
    """Everything the service can be told; each field is also ``FLOWERCLF_SERVE_<NAME>``.

    Example: ``FLOWERCLF_SERVE_MODEL=models/tf_flowers FLOWERCLF_SERVE_PORT=9000``.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    model: Path | None = Field(None, description="model package directory (flowerclf export)")
    backend: str = Field("onnx", description="onnx | onnx_int8 | torch | tensorrt")
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
    decode_threads: int = Field(2, ge=1, le=64, description="threads decoding uploads")
    reject: bool = Field(
        True, description="answer is_known=false for images unlike every training class"
    )
    reject_threshold: float | None = Field(
        None, description="override the package's unknown-score threshold"
    )
    log_level: str = "info"
