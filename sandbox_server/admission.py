"""Concurrency limit with a bounded wait queue: overload is answered at once instead of timing everyone out."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator


class Overloaded(RuntimeError):
    """Every slot is busy and the queue is full (or the wait took too long)."""


class AdmissionController:
    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout_s: float):
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self._slots = asyncio.Semaphore(max_concurrency)
        self.running = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        # Counted, not read off the semaphore: a request admitted in this same event-loop tick has not taken its
        # slot yet, so `locked()` would let simultaneous arrivals past the queue bound.
        if self.running + self.waiting >= self.max_concurrency + self.max_queue:
            raise Overloaded(f"{self.running} runs in progress and {self.waiting} queued "
                             f"(max_concurrency={self.max_concurrency}, max_queue={self.max_queue}); retry later")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.queue_timeout_s)
        except asyncio.TimeoutError as e:
            raise Overloaded(f"waited {self.queue_timeout_s}s for a free slot; retry later") from e
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
