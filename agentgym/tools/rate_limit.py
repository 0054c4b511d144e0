"""Token-bucket rate limits for tool calls: one per process, and one shared by every process of a run through Ray.

Both buckets use the same reservation arithmetic (GCRA, the "virtual scheduling" form of a token bucket): each
caller is given the exact moment its token becomes available and sleeps until then. That makes the queue FIFO (no
caller starves, whatever the number of callers), keeps the long-run rate exact (slots are spaced on an absolute
schedule, so wake-up lateness never accumulates), and lets a caller with a deadline learn at once whether it would
get a token in time, without taking one. The shared bucket runs the arithmetic inside a Ray actor that never
blocks, so one slow caller cannot hold the others up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Optional, Protocol

from agentgym.errors import AgentGymError, ConfigError

logger = logging.getLogger(__name__)


class RateLimitTimeout(AgentGymError):
    """No token would be free before the caller's time limit; no token was taken."""


class AsyncRateLimiter(Protocol):
    rate: float
    burst: int

    async def acquire(self, timeout: Optional[float] = None) -> float:
        """Wait for one token; return the seconds waited. Raise RateLimitTimeout if the wait would exceed `timeout`."""
        ...


@dataclass
class GcraSchedule:
    """The reservation arithmetic of a token bucket of `rate` tokens/s holding at most `burst` tokens.

    `tat` (theoretical arrival time) is when the bucket would next be full-rate busy; a token is free at
    `tat - (burst - 1) / rate`. Pure arithmetic on a caller-given clock, so it runs the same in an event loop and
    in a Ray actor.
    """

    rate: float
    burst: int
    tat: float = field(default=float("-inf"))

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigError(f"rate limit must be > 0 tokens per second, got {self.rate!r}.")
        if int(self.burst) != self.burst or self.burst < 1:
            raise ConfigError(f"burst must be a whole number >= 1, got {self.burst!r}.")
        self.burst = int(self.burst)

    def reserve(self, now: float, max_delay: Optional[float] = None) -> Optional[float]:
        """Take the next free token; return its delay after `now`, or None (nothing taken) if past max_delay."""
        interval = 1.0 / self.rate
        tat = max(self.tat, now)
        free_at = tat - (self.burst - 1) * interval
        delay = max(0.0, free_at - now)
        if max_delay is not None and delay > max_delay:
            return None
        self.tat = tat + interval
        return delay


class TokenBucket:
    """A token bucket shared by the coroutines of one process (any event loop: it holds no loop-bound object)."""

    def __init__(self, rate: float, burst: int):
        self._schedule = GcraSchedule(rate=rate, burst=burst)
        self.rate = self._schedule.rate
        self.burst = self._schedule.burst

    async def acquire(self, timeout: Optional[float] = None) -> float:
        delay = self._schedule.reserve(time.monotonic(), timeout)
        if delay is None:
            raise RateLimitTimeout(
                f"rate limit {self.rate:g}/s: the next free slot is more than {timeout:.3f} s away."
            )
        if delay > 0:
            await asyncio.sleep(delay)
        return delay


def global_limiter_actor_name(key: str) -> str:
    return f"agentgym-rate-limit:{key}"


def _make_actor_class():
    import ray

    @ray.remote(num_cpus=0)
    class RateLimiterActor:
        """Holds the run-wide schedule. Never waits: it hands out reservation delays and the callers sleep."""

        def __init__(self, rate: float, burst: int):
            self._schedule = GcraSchedule(rate=rate, burst=burst)

        def settings(self) -> tuple[float, int]:
            return self._schedule.rate, self._schedule.burst

        def reserve(self, max_delays: list[Optional[float]]) -> list[Optional[float]]:
            now = time.monotonic()
            return [self._schedule.reserve(now, d) for d in max_delays]

    return RateLimiterActor


_ACTOR_CLASS = None


def _actor_class():
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = _make_actor_class()
    return _ACTOR_CLASS


@dataclass
class _Waiter:
    max_delay: Optional[float]
    future: asyncio.Future


class GlobalTokenBucket:
    """A token bucket shared by every process of a Ray job, through a named actor (one per `key`).

    The first process to ask creates the actor; the others find it by name (`get_if_exists`), so all rollout
    workers of a run share one schedule. Within a process, callers that ask while a request to the actor is in
    flight are batched into the next request: one round trip serves any number of waiting callers, in FIFO order.
    Needs `ray.init()` (or a Ray worker process) before the first `acquire`.
    """

    def __init__(self, key: str, rate: float, burst: int, *, max_batch: int = 1024):
        GcraSchedule(rate=rate, burst=burst)  # validates
        self.key = key
        self.rate = float(rate)
        self.burst = int(burst)
        self._max_batch = max_batch
        self._actor = None
        self._pending: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Waiter]]" = (
            weakref.WeakKeyDictionary()
        )
        self._pumps: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = weakref.WeakKeyDictionary()

    @property
    def actor_name(self) -> str:
        return global_limiter_actor_name(self.key)

    async def _get_actor(self):
        if self._actor is None:
            import ray

            if not ray.is_initialized():
                raise AgentGymError(
                    "the global rate limit needs Ray, but this process is not connected to Ray. "
                    "Call ray.init() first, or set enable_global_rate_limit: false."
                )
            actor = _actor_class().options(name=self.actor_name, get_if_exists=True).remote(self.rate, self.burst)
            rate, burst = await actor.settings.remote()
            if (rate, burst) != (self.rate, self.burst):
                raise ConfigError(
                    f"the global rate limiter {self.actor_name!r} already runs with rate {rate:g}/s, burst {burst}, "
                    f"but this process asks for rate {self.rate:g}/s, burst {self.burst}.",
                    fix="give every worker of the run the same rate_limit and burst, or a distinct limiter name.",
                )
            self._actor = actor
        return self._actor

    async def acquire(self, timeout: Optional[float] = None) -> float:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        waiter = _Waiter(max_delay=timeout, future=loop.create_future())
        self._pending.setdefault(loop, []).append(waiter)
        pump = self._pumps.get(loop)
        if pump is None or pump.done():
            self._pumps[loop] = loop.create_task(self._pump(loop))
        delay = await waiter.future
        if delay is None:
            raise RateLimitTimeout(
                f"global rate limit {self.rate:g}/s: the next free slot is more than {timeout:.3f} s away."
            )
        # The actor counted the delay from when it served the batch; the round trip is already behind us.
        remaining = delay - (time.monotonic() - start)
        if remaining > 0:
            await asyncio.sleep(remaining)
        return time.monotonic() - start

    async def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending[loop]
        while pending:
            batch = pending[: self._max_batch]
            del pending[: len(batch)]
            live = [w for w in batch if not w.future.done()]
            if not live:
                continue
            try:
                delays = await self._reserve([w.max_delay for w in live])
            except BaseException as exc:  # hand every waiter the failure; the pump itself must not die silently
                for w in live:
                    if not w.future.done():
                        w.future.set_exception(
                            exc if isinstance(exc, Exception) else AgentGymError(f"rate limiter stopped: {exc!r}")
                        )
                if not isinstance(exc, Exception):
                    raise
                continue
            for w, d in zip(live, delays):
                if not w.future.done():
                    w.future.set_result(d)

    async def _reserve(self, max_delays: list[Optional[float]]) -> list[Optional[float]]:
        from ray.exceptions import RayActorError

        try:
            return await (await self._get_actor()).reserve.remote(max_delays)
        except RayActorError:
            # The process that created the actor may have exited and taken it along; create or find it again.
            self._actor = None
            return await (await self._get_actor()).reserve.remote(max_delays)


class RayOrLocalTokenBucket:
    """The run-wide bucket when this process is connected to Ray, else this process's own (with one warning).

    What a tool's `enable_global_rate_limit: true` means: a run without Ray still works, limited per process.
    """

    def __init__(self, global_bucket: GlobalTokenBucket, local: TokenBucket):
        self._global = global_bucket
        self._local = local
        self.rate = local.rate
        self.burst = local.burst
        self._use_global: Optional[bool] = None

    async def acquire(self, timeout: Optional[float] = None) -> float:
        if self._use_global is None:
            import ray

            self._use_global = ray.is_initialized()
            if not self._use_global:
                logger.warning(
                    "enable_global_rate_limit is set but this process is not connected to Ray; the rate limit of "
                    "%g/s applies to this process only. Call ray.init() before the first tool call to share it.",
                    self.rate,
                )
        return await (self._global if self._use_global else self._local).acquire(timeout)
