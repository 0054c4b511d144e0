"""The environment server: the `Session` contract over HTTP (routes in agentgym.episode.wire).

Each open session is an in-process `Session` here, so validation, per-call timeouts, instance lifetimes and
releases are exactly the in-process ones. What the server adds is bounded, self-cleaning sharing:

- at most `max_sessions` open at once; an open beyond that is answered 503 at once, with Retry-After and a message
  that names the limit (a fast, clear "busy", never a queue that hides overload);
- at most `max_concurrent_calls` tool-call requests executing across all sessions (more wait their turn);
- a session with no request in flight and no request or heartbeat for `idle_timeout_s` is closed and its
  instances released: a client that vanished mid-episode leaks nothing;
- closing (DELETE, idle reaping, shutdown) waits for the session's requests in flight, so no instance is created
  after its session released the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from agentgym.episode.session import Session
from agentgym.episode.wire import (API, EnvironmentInfo, OpenSession, ServerStats, SessionOpened, ToolCallsRequest,
                                   ToolCallsResponse, UserTurnRequest, UserTurnResponse, WireScores, WireToolResult)
from agentgym.interactions.base import BaseInteraction
from agentgym.tools.base_tool import BaseTool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvironmentServerConfig:
    max_sessions: int = 1024
    idle_timeout_s: float = 300.0
    max_concurrent_calls: int = 512
    retry_after_s: float = 1.0  # what a 503 tells clients to wait


@dataclass
class _Hosted:
    session: Session
    last_seen: float
    busy: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


class _Gone(Exception):
    """The named session is not open (closed, reaped, or never opened)."""


class EnvironmentServer:
    """Hosts sessions over one registry of tools and interactions; `app()` is its FastAPI application."""

    def __init__(self, tools: Mapping[str, BaseTool], interactions: Mapping[str, BaseInteraction] | None = None,
                 config: EnvironmentServerConfig | None = None):
        self.tools = dict(tools)
        self.interactions = dict(interactions or {})
        self.config = config or EnvironmentServerConfig()
        self.sessions: dict[str, _Hosted] = {}
        self._opening = 0
        self._calls: asyncio.Semaphore | None = None
        self.stats = ServerStats(open_sessions=0, opened=0, closed=0, reaped=0, refused=0, release_errors=0, tool_calls=0)

    def info(self) -> EnvironmentInfo:
        return EnvironmentInfo(tools=[t.tool_schema for t in self.tools.values()], interactions=list(self.interactions),
                               max_sessions=self.config.max_sessions, idle_timeout_s=self.config.idle_timeout_s)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def open(self, request: OpenSession) -> SessionOpened:
        if request.session_id in self.sessions:
            raise ValueError(f"session {request.session_id} is already open; session ids must be unique")
        session = Session(self.tools, extra_info=request.extra_info, interactions=self.interactions,
                          config=request.config.session_config(), session_id=request.session_id)
        hosted = _Hosted(session, time.monotonic())
        self.sessions[request.session_id] = hosted
        try:
            await session.start()
        except BaseException:
            self.sessions.pop(request.session_id, None)
            await session.close()
            raise
        self.stats.opened += 1
        interaction = None
        if session.interaction is not None:
            interaction = next(name for name, i in self.interactions.items() if i is session.interaction)
        return SessionOpened(session_id=request.session_id, tools=list(session.tools), interaction=interaction,
                             idle_timeout_s=self.config.idle_timeout_s)

    def at_capacity(self) -> bool:
        return len(self.sessions) + self._opening >= self.config.max_sessions

    @asynccontextmanager
    async def use(self, session_id: str) -> AsyncIterator[Session]:
        hosted = self.sessions.get(session_id)
        if hosted is None:
            raise _Gone(session_id)
        hosted.busy += 1
        hosted.idle.clear()
        try:
            yield hosted.session
        finally:
            hosted.busy -= 1
            hosted.last_seen = time.monotonic()
            if hosted.busy == 0:
                hosted.idle.set()

    def touch(self, session_id: str) -> None:
        hosted = self.sessions.get(session_id)
        if hosted is None:
            raise _Gone(session_id)
        hosted.last_seen = time.monotonic()

    async def close(self, session_id: str, *, reaped: bool = False) -> bool:
        hosted = self.sessions.pop(session_id, None)
        if hosted is None:
            return False
        cfg = hosted.session.config
        try:
            # Requests in flight end within their own timeouts; wait for them so nothing is created after release.
            await asyncio.wait_for(hosted.idle.wait(), cfg.tool_call_timeout + 2 * cfg.release_timeout)
        except asyncio.TimeoutError:
            log.warning("session %s still had requests running when it was closed", session_id)
        await hosted.session.close()
        self.stats.closed += 1
        self.stats.reaped += int(reaped)
        self.stats.release_errors += len(hosted.session.release_errors)
        return True

    async def reap_idle(self) -> int:
        """Close every session whose client has been silent for longer than the idle timeout."""
        now = time.monotonic()
        stale = [sid for sid, h in self.sessions.items()
                 if h.busy == 0 and now - h.last_seen > self.config.idle_timeout_s]
        for sid in stale:
            log.info("releasing session %s: no request or heartbeat for %.1f s", sid, now - self.sessions[sid].last_seen)
        await asyncio.gather(*(self.close(sid, reaped=True) for sid in stale))
        return len(stale)

    async def _reaper(self) -> None:
        every = max(min(self.config.idle_timeout_s / 4, 5.0), 0.01)
        while True:
            await asyncio.sleep(every)
            try:
                await self.reap_idle()
            except Exception:  # the reaper must outlive one bad release
                log.exception("reaping idle sessions failed")

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(sid) for sid in list(self.sessions)))

    # -- the application ---------------------------------------------------------------------------------------

    def app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            self._calls = asyncio.Semaphore(self.config.max_concurrent_calls)
            reaper = asyncio.ensure_future(self._reaper())
            try:
                yield
            finally:
                reaper.cancel()
                await self.close_all()

        app = FastAPI(title="agentgym environment server", lifespan=lifespan)

        def reply(model: BaseModel) -> Response:
            # pydantic's own serialiser: FastAPI's encoder walks a returned dict in Python, several times slower
            return Response(model.model_dump_json(), media_type="application/json")

        def error(status: int, message: str, **headers: str) -> JSONResponse:
            return JSONResponse({"error": message}, status_code=status, headers=headers or None)

        @app.exception_handler(ValidationError)
        async def bad_request(request: Request, exc: ValidationError) -> JSONResponse:
            return error(422, f"{request.method} {request.url.path}: the body does not match the wire format: {exc}")

        @app.exception_handler(Exception)
        async def failed(request: Request, exc: Exception) -> JSONResponse:
            # A tool's or interaction's bug outside a tool call (calc_reward, generate_response): the client's
            # episode fails with this message, as the in-process one fails with the exception.
            log.exception("%s %s failed", request.method, request.url.path)
            return error(500, f"{request.method} {request.url.path} failed: {type(exc).__name__}: {exc}")

        def gone(session_id: str) -> JSONResponse:
            return error(404, f"no open session {session_id}: it was closed, or released after "
                              f"{self.config.idle_timeout_s:g} s without a request or heartbeat")

        @app.get(API + "/health")
        async def health() -> dict[str, bool]:
            return {"ok": True}

        @app.get(API + "/environment")
        async def environment() -> Any:
            return self.info().model_dump(mode="json", exclude_none=True)

        @app.get(API + "/stats")
        async def stats() -> Any:
            self.stats.open_sessions = len(self.sessions)
            return self.stats.model_dump()

        @app.post(API + "/sessions")
        async def open_session(request: Request) -> Any:
            if self.at_capacity():
                self.stats.refused += 1
                return error(503, f"the environment server holds {len(self.sessions)} open sessions, its limit "
                                  "(--max-sessions); retry after the Retry-After seconds, close finished sessions, "
                                  "or raise the limit", **{"Retry-After": f"{self.config.retry_after_s:g}"})
            self._opening += 1
            try:
                body = OpenSession.model_validate_json(await request.body())
                opened = await self.open(body)
            except ValueError as exc:  # a bad row (unknown tool, bad kwargs) or a duplicate id: the caller's to fix
                return error(422, str(exc))
            finally:
                self._opening -= 1
            return reply(opened)

        @app.post(API + "/sessions/{session_id}/tool_calls")
        async def tool_calls(session_id: str, request: Request) -> Any:
            body = ToolCallsRequest.model_validate_json(await request.body())
            assert self._calls is not None
            try:
                async with self.use(session_id) as session, self._calls:
                    results = await session.run_calls(list(body.calls))
            except _Gone:
                return gone(session_id)
            self.stats.tool_calls += len(results)
            return reply(ToolCallsResponse(results=[WireToolResult.of(r) for r in results]))

        @app.post(API + "/sessions/{session_id}/user_turn")
        async def user_turn(session_id: str, request: Request) -> Any:
            body = UserTurnRequest.model_validate_json(await request.body())
            try:
                async with self.use(session_id) as session:
                    turn = await session.user_turn(body.messages)
            except _Gone:
                return gone(session_id)
            return reply(UserTurnResponse.of(turn))

        @app.post(API + "/sessions/{session_id}/scores")
        async def scores(session_id: str) -> Any:
            try:
                async with self.use(session_id) as session:
                    result = await session.scores()
            except _Gone:
                return gone(session_id)
            return reply(WireScores.of(result))

        @app.post(API + "/sessions/{session_id}/heartbeat")
        async def heartbeat(session_id: str) -> Any:
            try:
                self.touch(session_id)
            except _Gone:
                return gone(session_id)
            return {}

        @app.delete(API + "/sessions/{session_id}")
        async def delete(session_id: str) -> Any:
            closed = await self.close(session_id)
            return {"closed": closed}

        return app
