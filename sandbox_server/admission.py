"""Concurrency limit with a bounded wait queue: overload is answered at once instead of timing everyone out."""

from __future__ import annotations

import asyncio
import math
import time
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
        self.mean_run_s: float | None = None

    def retry_after_s(self) -> int:
        """Whole seconds until the present backlog has likely drained: what a 503's `Retry-After` tells clients, so
        that they come back when there is room instead of hammering a full queue."""
        if self.mean_run_s is None:
            return 1
        backlog = (self.running + self.waiting + 1) / self.max_concurrency
        return max(1, math.ceil(backlog * self.mean_run_s))

    def _ran(self, seconds: float) -> None:
        self.mean_run_s = seconds if self.mean_run_s is None else 0.8 * self.mean_run_s + 0.2 * seconds

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
        started = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            self._ran(time.monotonic() - started)
