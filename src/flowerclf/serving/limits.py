"""Bounds on what one request, and all of them together, may hold: size, time, slots.

* :class:`BodySizeLimitMiddleware`: 413 for bodies over ``max_body_bytes`` and 408 for
  bodies that do not arrive within ``body_timeout_s`` (a slow or stalled upload would
  otherwise hold its buffer, and its slot, until the client gives up).
* :class:`AdmissionMiddleware`: at most ``max_active`` inference requests are worked on at
  once and at most ``max_queued`` wait for a slot, each for at most ``queue_timeout_s``;
  every other request is answered 503 with ``Retry-After`` at once. Memory then grows
  with the limits, not with the number of clients.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowerclf.serving.errors import BodyTimeoutError, BodyTooLargeError, error_response, overloaded

# Requests that decode images and run the model; reads (/v1/classes, /v1/model, thumbnails)
# and the operations routes stay answerable under overload.
GUARDED_METHOD = "POST"
GUARDED_PREFIX = "/v1/"


class BodySizeLimitMiddleware:
    """Answer 413 for bodies over ``limit`` bytes and 408 for bodies slower than ``timeout_s``.

    A declared ``Content-Length`` over the limit is refused before anything is read; for
    chunked bodies the bytes are counted as they arrive and reading stops at the limit
    (the route's parser then raises :class:`BodyTooLargeError`, answered as 413). The
    deadline runs from the first read of the body to its last chunk; once the body is
    complete, reads (which then only wait for a disconnect) are passed through untimed.
    """

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.limit:
            await error_response(BodyTooLargeError(self.limit))(scope, receive, send)
            return
        received = 0
        body_done = False
        deadline: float | None = None
        response_started = False
        loop = asyncio.get_running_loop()

        async def limited_receive() -> Message:
            nonlocal received, body_done, deadline
            if body_done or self.timeout_s is None:
                message = await receive()
            else:
                if deadline is None:
                    deadline = loop.time() + self.timeout_s
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise BodyTimeoutError(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
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
        except (BodyTooLargeError, BodyTimeoutError) as exc:
            if response_started:
                raise
            await error_response(exc)(scope, receive, send)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return -1


class AdmissionMiddleware:
    """A bounded waiting room in front of the inference routes.

    Args:
        max_active: inference requests handled at once (each holds its body, decoded
            image and tensors).
        max_queued: requests allowed to wait for a slot; the next one gets 503 at once.
        queue_timeout_s: longest wait for a slot before a 503.
        retry_after_s: the ``Retry-After`` header of the 503s.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_active: int,
        max_queued: int,
        queue_timeout_s: float,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.max_active = max_active
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self.active = 0
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None  # made on the server's event loop

    def _guarded(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope.get("method") == GUARDED_METHOD
            and str(scope.get("path", "")).startswith(GUARDED_PREFIX)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._guarded(scope):
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_active)
        if self._slots.locked() and self.waiting >= self.max_queued:
            error = overloaded(self.retry_after_s, f"{self.waiting} requests already waiting")
            await error_response(error)(scope, receive, send)
            return
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
        except TimeoutError:
            reason = f"no slot free within {self.queue_timeout_s:g} s"
            error = overloaded(self.retry_after_s, reason)
            await error_response(error)(scope, receive, send)
            return
        finally:
            self.waiting -= 1
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self._slots.release()
