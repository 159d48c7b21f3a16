"""Optional API-key authentication (``FLOWERCLF_SERVE_API_KEY``).

With a key set, every request except the probes (``/health``, ``/ready``: orchestrators
call them without credentials and they reveal nothing) must carry it as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; anything else is answered 401 before
the body is read. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from flowerclf.serving.errors import ApiError, error_response

EXEMPT_PATHS = frozenset({"/health", "/ready"})
BEARER = "bearer "


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key a request carries (``X-API-Key`` or a bearer token), if any."""
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            if text.lower().startswith(BEARER):
                return text[len(BEARER) :].strip()
    return None


def key_matches(presented: str | None, expected: str) -> bool:
    if presented is None:
        return False
    # compare_digest takes as long for every wrong key of a given length.
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
        headers={"WWW-Authenticate": "Bearer"},
    )


class ApiKeyMiddleware:
    """401 for every non-exempt HTTP request without the right key."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        if not api_key:
            raise ValueError("ApiKeyMiddleware needs a non-empty key")
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if not key_matches(presented_key(list(scope.get("headers", ()))), self.api_key):
            await error_response(unauthorized())(scope, receive, send)
            return
        await self.app(scope, receive, send)
