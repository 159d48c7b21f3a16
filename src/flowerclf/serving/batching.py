"""Micro-batching: concurrent single-image requests share one forward pass.

Requests put their preprocessed array on a queue; one task takes everything that is
waiting (up to ``max_size``, waiting at most ``max_wait_s`` for more), runs the batch in
the inference executor and hands each caller its row. While a batch runs, the next one
fills up, so under load batches form without any added wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# A batch -> per-row outputs (probabilities, embeddings[, unknown scores]); each caller
# gets the same tuple with its own row of every output.
RunFn = Callable[[np.ndarray], tuple[Any, ...]]
Result = tuple[Any, ...]
_Item = tuple[np.ndarray, "asyncio.Future[Result]"]


class MicroBatcher:
    """Groups single arrays ``(3, S, S)`` into batches for ``run``.

    Args:
        run: ``(N, 3, S, S)`` -> (probabilities ``(N, C)``, embeddings ``(N, D)``).
        executor: where ``run`` executes (never on the event loop).
        max_size: most images per batch.
        max_wait_s: how long the first request of a batch waits for company.
        max_pending: most arrays waiting; further submitters wait for room (the admission
            limit in front of the routes keeps their number bounded too).
    """

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        max_size: int = 8,
        max_wait_s: float = 0.002,
        max_pending: int = 256,
    ) -> None:
        self._run = run
        self._executor = executor
        self._max_size = max(1, max_size)
        self._max_wait_s = max(0.0, max_wait_s)
        self._max_pending = max(1, max_pending)
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self._max_pending)
        self._task = asyncio.create_task(self._loop(), name="flowerclf-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                _, future = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(RuntimeError("service is shutting down"))

    async def submit(self, array: np.ndarray) -> Result:
        """Queue one preprocessed image and wait for its (probabilities, embedding)."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((array, future))
        return await future

    async def _collect(self, queue: asyncio.Queue[_Item]) -> list[_Item]:
        items = [await queue.get()]
        if self._max_wait_s > 0 and queue.qsize() < self._max_size - 1:
            await asyncio.sleep(self._max_wait_s)
        while len(items) < self._max_size and not queue.empty():
            items.append(queue.get_nowait())
        return items

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = [item for item in await self._collect(self._queue) if not item[1].done()]
            if not items:
                continue
            batch = np.stack([array for array, _ in items])
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, batch)
            except Exception as exc:  # reported to every waiting request
                log.exception("inference failed for a batch of %d", len(items))
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for row, (_, future) in enumerate(items):
                if not future.done():
                    future.set_result(_row(outputs, row))


def _row(outputs: tuple[Any, ...], row: int) -> Result:
    """Row ``row`` of each output (an output that is None stays None)."""
    return tuple(None if output is None else output[row] for output in outputs)
