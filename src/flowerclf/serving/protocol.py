"""uvicorn's HTTP protocol with a header deadline (uvicorn has none of its own).

uvicorn arms its keep-alive timer only after a response, so a connection that is opened
and then sends nothing, or dribbles a header a byte at a time, is held for ever: 200 of
them were all kept open. Here every connection must deliver a complete request head within
``header_timeout_s`` of opening and of each finished response; otherwise it is closed.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from flowerclf.serving.settings import ServeSettings


@functools.cache
def configured_header_timeout_s() -> float:
    """This process's ``header_timeout_s`` (``FLOWERCLF_SERVE_HEADER_TIMEOUT_S``).

    Read from the environment, like the app's settings, because uvicorn workers are
    separate processes that receive the protocol class by name, not an instance.
    """
    return ServeSettings().header_timeout_s


class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """``AutoHTTPProtocol`` (httptools or h11) closing connections whose request head is late.

    Both uvicorn implementations set ``self.cycle`` when a request's headers are complete,
    so "the cycle is still the one the timer was armed with" means no new request arrived.
    """

    header_timeout_s: float | None = None  # None: configured_header_timeout_s()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        timeout_s = self.header_timeout_s or configured_header_timeout_s()
        self._header_timer = self.loop.call_later(timeout_s, self._header_timeout, self.cycle)

    def _cancel_header_timer(self) -> None:
        timer: asyncio.TimerHandle | None = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = None

    def _header_timeout(self, armed_with: Any) -> None:
        self._header_timer = None
        idle = armed_with is None or armed_with.response_complete
        if self.cycle is armed_with and idle and not self.transport.is_closing():
            self.transport.close()
