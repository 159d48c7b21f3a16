"""Request-body size limit, enforced before and while the body is read."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowerclf.serving.errors import BodyTooLargeError, error_response


class BodySizeLimitMiddleware:
    """Answer 413 for bodies over ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is read; for
    chunked bodies the bytes are counted as they arrive and reading stops at the limit
    (the route's parser then raises :class:`BodyTooLargeError`, answered as 413).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await error_response(BodyTooLargeError(self.limit), {"Connection": "close"})(
                        scope, receive, send
                    )
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLargeError(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError as exc:
            if response_started:
                raise
            await error_response(exc, {"Connection": "close"})(scope, receive, send)
