"""One error shape for every failure: ``{"error": {"code", "message", "status", "details"}}``.

``code`` is a stable machine-readable string (the list is :data:`ERROR_CODES`), ``message``
a sentence for people, ``details`` optional structured context (validation errors,
accepted formats, limits).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)

ERROR_CODES = (
    "bad_request",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "image_too_large",
    "too_many_files",
    "unsupported_media_type",
    "unsupported_image_format",
    "invalid_image",
    "validation_error",
    "unauthorized",
    "request_timeout",
    "not_ready",
    "overloaded",
    "internal_error",
)

# Not an HTTP status anyone receives: the client left before the answer (nginx's code).
# Metrics count it under this label so that aborted uploads are not counted as 5xx.
CLIENT_CLOSED_REQUEST = 499

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "not_ready",
}


class ApiError(Exception):
    """An error the service answers with deliberately (never a 5xx for bad input)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.message, self.details)


class BodyTooLargeError(ApiError):
    """The request body is over ``max_body_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "payload_too_large",
            f"request body larger than the limit of {limit:,} bytes",
            {"max_body_bytes": limit},
            # The rest of the body is never read, so the connection cannot be reused.
            {"Connection": "close"},
        )


class BodyTimeoutError(ApiError):
    """The request body did not arrive within ``body_timeout_s``."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408,
            "request_timeout",
            f"the request body did not arrive within {timeout_s:g} s",
            {"body_timeout_s": timeout_s},
            {"Connection": "close"},
        )


def overloaded(retry_after_s: int, reason: str) -> ApiError:
    """503 for a request refused because the service is at capacity."""
    return ApiError(
        503,
        "overloaded",
        f"the service is at capacity ({reason}); retry after {retry_after_s} s",
        {"retry_after_s": retry_after_s},
        {"Retry-After": str(retry_after_s)},
    )


def error_body(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": details or {}}}


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    merged = error.headers | (headers or {})
    return JSONResponse(error.body(), status_code=error.status, headers=merged)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def clean_validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Validation errors without the offending input (which may be megabytes of base64)."""
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
         "type": str(e.get("type", ""))}
        for e in errors
    ]  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the stable error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = clean_validation_errors(list(exc.errors()))
        return error_response(
            ApiError(422, "validation_error", _validation_message(errors), {"errors": errors})
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        code = _STATUS_CODES.get(status, "bad_request" if status < 500 else "internal_error")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        return error_response(ApiError(status, code, message), headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, _: ClientDisconnect) -> JSONResponse:
        # Nobody is left to read an answer and nothing is wrong with the service: not a
        # 5xx, no traceback (140 aborted uploads used to write ~19,000 log lines).
        log.debug("client disconnected during %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(CLIENT_CLOSED_REQUEST, "bad_request", "client closed the request"),
            status_code=CLIENT_CLOSED_REQUEST,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this handler and the server logs that traceback: one
        # line here names the request without printing the traceback a second time.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(ApiError(500, "internal_error", "internal server error"))
