"""Which sandbox server gets the next request: a fleet of servers with least-outstanding routing and health checks.

A 1,000-way rollout needs many sandbox servers, and one dead server must not fail a step. The fleet keeps, per
server, the requests it has in flight from this process and whether it is in rotation:

- Routing: the server with the fewest requests outstanding (ties spread at random), avoiding the servers this call
  already failed on, so a retry goes to another server within the same deadline.
- Passive health: a server that cannot be reached (connection refused or reset, no answer in time) is taken out of
  rotation at once; one that keeps failing on its own side (5xx, in-band SandboxError) after `eject_after` failures.
- Active health: a server out of rotation gets a GET of its health URL (`/v1/ping` for the sandbox) once its back-off
  is over, on the next call that looks for a server (no background task to own or to close); an answer 200 puts it
  back, a failure doubles its back-off (up to `max_probe_interval`).
- When every server is out, calls still go to the one that is due first: the caller's retries and deadline decide
  when to give up, exactly as with one server.

Counts are per process (per fleet object); the run-wide bound is the rate limit. One URL with a load balancer
behind it (docker compose's `lb` service) is a fleet of one here: the balancer does the spreading.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Awaitable, Callable, Optional, Protocol, Sequence

import aiohttp

from agentgym.tools.sandbox_fusion.http import SharedHttpSessions

logger = logging.getLogger(__name__)


class Verdict(str, Enum):
    """What one request told us about its server."""

    OK = "ok"  # an answer (whatever the code did)
    OVERLOADED = "overloaded"  # 429/503: busy, healthy; prefer another server for the retry
    FAILED = "failed"  # 5xx or in-band SandboxError: the server's own failure
    UNREACHABLE = "unreachable"  # no connection, reset, or no answer in time: out of rotation now


@dataclass
class ServerLease:
    """One request's hold on a server; give it back with `Router.release` exactly once."""

    server: str
    """The server's endpoint URL, as the fleet was given it (e.g. http://host:port/run_code)."""


class Router(Protocol):
    """Chooses a server per request. `avoid`: servers this call already failed on (a retry prefers others)."""

    async def acquire(self, avoid: frozenset[str] = frozenset()) -> ServerLease: ...

    def release(self, lease: ServerLease, verdict: Verdict) -> None: ...

    def has_alternative(self, avoid: frozenset[str]) -> bool:
        """Whether a server in rotation outside `avoid` exists (then a retry need not back off)."""
        ...

    @property
    def size(self) -> int: ...


@dataclass
class _Server:
    url: str
    in_rotation: bool = True
    outstanding: int = 0
    consecutive_failures: int = 0
    probe_at: float = 0.0
    probe_interval: float = 0.0
    probing: bool = False
    requests: int = 0
    failures: int = 0
    ejections: int = 0
    readmissions: int = 0


def health_url_for(endpoint_suffix: str, health_path: str) -> Callable[[str], str]:
    """`http://host:port/run_code` -> `http://host:port/v1/ping`: where to check the server behind an endpoint."""

    def health_url(endpoint: str) -> str:
        url = endpoint.rstrip("/")
        if url.endswith(endpoint_suffix):
            url = url[: -len(endpoint_suffix)]
        return url + health_path

    return health_url


@dataclass
class FleetSettings:
    health_url: Callable[[str], str] = health_url_for("/run_code", "/v1/ping")
    """Where to check a server, given its endpoint URL."""
    eject_after: int = 3
    """Consecutive FAILED answers that take a server out (UNREACHABLE takes it out at once)."""
    probe_interval: float = 1.0
    max_probe_interval: float = 30.0
    probe_timeout: float = 2.0


class SandboxFleet:
    """Several servers of one kind behind one `Router`: least outstanding requests, ejection, `/v1/ping` probes."""

    def __init__(self, urls: Sequence[str], sessions: SharedHttpSessions, settings: FleetSettings | None = None,
                 rng: random.Random | None = None):
        if not urls:
            raise ValueError("a sandbox fleet needs at least one server URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"server URLs repeat: {list(urls)}; name each server once")
        self._servers = {u: _Server(u) for u in urls}
        # A fleet is built in a tool's constructor, before any event loop runs: the pooled session is looked up per
        # request, in the loop making it.
        self._sessions = sessions
        self.settings = settings or FleetSettings()
        self._rng = rng or random.Random()

    @property
    def size(self) -> int:
        return len(self._servers)

    @property
    def urls(self) -> list[str]:
        return list(self._servers)

    def in_rotation(self) -> list[str]:
        return [s.url for s in self._servers.values() if s.in_rotation]

    def has_alternative(self, avoid: frozenset[str]) -> bool:
        return any(s.in_rotation and s.url not in avoid for s in self._servers.values())

    async def acquire(self, avoid: frozenset[str] = frozenset()) -> ServerLease:
        await self._probe_due(avoid)
        servers = list(self._servers.values())
        candidates = [s for s in servers if s.in_rotation and s.url not in avoid]
        if not candidates:
            candidates = [s for s in servers if s.in_rotation]
        if not candidates:
            # Every server is out: try the one due first (the call's retries and deadline decide when to stop).
            first_due = min(s.probe_at for s in servers)
            candidates = [s for s in servers if s.probe_at == first_due]
        least = min(s.outstanding for s in candidates)
        chosen = self._rng.choice([s for s in candidates if s.outstanding == least])
        chosen.outstanding += 1
        chosen.requests += 1
        return ServerLease(chosen.url)

    def release(self, lease: ServerLease, verdict: Verdict) -> None:
        server = self._servers[lease.server]
        server.outstanding -= 1
        if verdict is Verdict.OK or verdict is Verdict.OVERLOADED:
            server.consecutive_failures = 0
            return
        server.failures += 1
        server.consecutive_failures += 1
        if verdict is Verdict.UNREACHABLE or server.consecutive_failures >= self.settings.eject_after:
            self._eject(server, verdict)

    def _eject(self, server: _Server, verdict: Verdict) -> None:
        if self.size == 1:
            return  # nowhere else to go: every call keeps trying it, as a plain client would
        if server.in_rotation:
            server.in_rotation = False
            server.ejections += 1
            server.probe_interval = self.settings.probe_interval
            logger.warning("server %s is out of rotation (%s); %d of %d left; checking %s from %g s on",
                           server.url, verdict.value, len(self.in_rotation()), self.size,
                           self.settings.health_url(server.url), server.probe_interval)
        server.probe_at = time.monotonic() + server.probe_interval

    async def _probe_due(self, avoid: frozenset[str]) -> None:
        now = time.monotonic()
        due = [s for s in self._servers.values() if not s.in_rotation and not s.probing and s.probe_at <= now]
        if due:
            await asyncio.gather(*(self._probe(s) for s in due))

    async def _probe(self, server: _Server) -> None:
        server.probing = True
        try:
            healthy = await self.ping(server.url)
        finally:
            server.probing = False
        if healthy:
            server.in_rotation = True
            server.consecutive_failures = 0
            server.readmissions += 1
            logger.warning("server %s answered %s and is back in rotation (%d of %d)", server.url,
                           self.settings.health_url(server.url), len(self.in_rotation()), self.size)
        else:
            server.probe_interval = min(self.settings.max_probe_interval, max(server.probe_interval, 0.1) * 2)
            server.probe_at = time.monotonic() + server.probe_interval

    async def ping(self, url: str) -> bool:
        """The health URL of the server at endpoint `url` answered 200 within the probe timeout."""
        try:
            async with self._sessions.get().get(
                self.settings.health_url(url), timeout=aiohttp.ClientTimeout(total=self.settings.probe_timeout)
            ) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return False

    def snapshot(self) -> dict[str, dict]:
        """Per server: in rotation, in flight now, requests, failures, ejections, readmissions (for logs and tests)."""
        return {
            s.url: {"in_rotation": s.in_rotation, "outstanding": s.outstanding, "requests": s.requests,
                    "failures": s.failures, "ejections": s.ejections, "readmissions": s.readmissions}
            for s in self._servers.values()
        }


class LazyServer:
    """A fleet of one whose URL is known only once it has started (the embedded sandbox)."""

    def __init__(self, resolve: Callable[[], Awaitable[str]]):
        self._resolve = resolve

    size = 1

    async def acquire(self, avoid: frozenset[str] = frozenset()) -> ServerLease:
        return ServerLease(await self._resolve())

    def release(self, lease: ServerLease, verdict: Verdict) -> None:
        return None

    def has_alternative(self, avoid: frozenset[str]) -> bool:
        return False


@dataclass
class LimitPressure:
    """Tells whether the client's own limits, not the servers, hold calls back, and says so in the log.

    A call that waited for a worker slot or a rate token longer than `threshold_s` counts as held by a limit; a 429/503
    answer counts as the servers being busy. When, over the last `window` calls (a full window: a start-up burst alone
    does not count), at least `share` of them were held
    by a limit and no server said it was busy, the limit bounds the step: one warning per `every_s` names the key to
    raise.
    """

    describe: Callable[[], str]
    threshold_s: float = 0.25
    window: int = 200
    share: float = 0.2
    every_s: float = 60.0
    _held: deque = field(default_factory=deque)
    _busy: deque = field(default_factory=deque)
    _warned_at: Optional[float] = None
    warnings: int = 0

    def __post_init__(self) -> None:
        self._held = deque(maxlen=self.window)
        self._busy = deque(maxlen=self.window)

    def record(self, *, slot_wait_s: float, rate_wait_s: float, overloaded: bool) -> None:
        self._held.append((slot_wait_s > self.threshold_s, rate_wait_s > self.threshold_s))
        self._busy.append(overloaded)
        if len(self._held) < self.window or any(self._busy):
            return
        by_slot = sum(1 for s, _ in self._held if s)
        by_rate = sum(1 for _, r in self._held if r)
        n = len(self._held)
        if max(by_slot, by_rate) < self.share * n:
            return
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < self.every_s:
            return
        self._warned_at = now
        self.warnings += 1
        logger.warning("the code tool's own limits, not the sandbox servers, bound the step: of the last %d calls, %d "
                       "waited for a worker slot and %d for a rate token, and no server answered 429/503. %s",
                       n, by_slot, by_rate, self.describe())
