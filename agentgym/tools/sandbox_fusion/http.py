"""The process's HTTP client for sandbox calls: one pooled keep-alive aiohttp session per event loop.

aiohttp won over httpx in benchmarks/code_tool_bench.py: on a 2-core machine, 3-4x lower p50 at 1 in flight and
4-8x the calls/s at 16 and 128 in flight. A session belongs to the loop that made it, so a process running several
loops (tests, a thread with its own loop) gets one session per loop; each is closed by `aclose_current_loop`, or
dropped with its loop.
"""

from __future__ import annotations

import asyncio
import weakref

import aiohttp


class SharedHttpSessions:
    def __init__(self, keepalive_timeout: float = 60.0):
        self._keepalive_timeout = keepalive_timeout
        self._sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession]" = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            # No pool cap here: every tool bounds its own requests in flight (num_workers).
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive_timeout)
            session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
            self._sessions[loop] = session
        return session

    async def aclose_current_loop(self) -> None:
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()


PROCESS_SESSIONS = SharedHttpSessions()
"""The one pool of the process (per event loop). Module-level on purpose: pooling only pays if every tool shares it."""


async def aclose_http_sessions() -> None:
    """Close this loop's pooled connections; call before the loop ends to avoid aiohttp's unclosed-session warning."""
    await PROCESS_SESSIONS.aclose_current_loop()
