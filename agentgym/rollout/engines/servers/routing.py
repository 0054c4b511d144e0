"""Client-side routing over several servers: one session stays on one server while that server is healthy.

Keeping a trajectory on one server makes every turn's prompt a prefix-cache hit there (SGLang's radix cache,
vLLM's automatic prefix caching).
New sessions go to the healthy server with the fewest requests in flight (then the fewest sessions), so load
spreads without a central router.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from agentgym.rollout.engines.base import EngineError


class NoHealthyServer(EngineError):
    """Every server is out of rotation."""


class StickyRouter:
    def __init__(self, urls: list[str], *, max_sessions: int = 100_000):
        if not urls:
            raise ValueError("at least one server URL is needed")
        if len(set(urls)) != len(urls):
            raise ValueError(f"server URLs must be distinct, got {urls}")
        self.urls = list(urls)
        self.max_sessions = max_sessions
        self.healthy: set[str] = set(urls)
        self.in_flight: Counter[str] = Counter()
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self._session_counts: Counter[str] = Counter()

    def pick(self, session_id: str | None) -> str:
        """The server for this session: its pinned one if healthy, else the least-loaded healthy one."""
        if session_id is not None:
            pinned = self._sessions.get(session_id)
            if pinned is not None and pinned in self.healthy:
                self._sessions.move_to_end(session_id)
                return pinned
        if not self.healthy:
            raise NoHealthyServer(f"no healthy server among {self.urls}; check that the inference servers are up")
        url = min(
            (u for u in self.urls if u in self.healthy),
            key=lambda u: (self.in_flight[u], self._session_counts[u]),
        )
        if session_id is not None:
            self._pin(session_id, url)
        return url

    def _pin(self, session_id: str, url: str) -> None:
        old = self._sessions.pop(session_id, None)
        if old is not None:
            self._session_counts[old] -= 1
        self._sessions[session_id] = url
        self._session_counts[url] += 1
        while len(self._sessions) > self.max_sessions:
            _, evicted = self._sessions.popitem(last=False)
            self._session_counts[evicted] -= 1

    def server_of(self, session_id: str) -> str | None:
        return self._sessions.get(session_id)

    def forget(self, session_id: str) -> None:
        url = self._sessions.pop(session_id, None)
        if url is not None:
            self._session_counts[url] -= 1

    def mark_down(self, url: str) -> None:
        self.healthy.discard(url)

    def mark_up(self, url: str) -> None:
        self.healthy.add(url)
