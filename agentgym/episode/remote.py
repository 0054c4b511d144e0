"""`RemoteSession`: the `Session` contract over HTTP, against the environment server
(`python3 -m agentgym.services.environment`), so rollout workers can run episodes whose tools live on other machines.

    env = RemoteEnvironment.connect("http://envs:8300")          # reads the server's tool schemas
    loop = AgentLoop(engine, tokenizer, {}, environment=env)     # or multi_turn.environment_url in the run config

Validation, timeouts and releases happen on the server, with the same `Session` code as in-process, so a
remote episode's tool results are the ones an in-process episode would get. While the session lives the client
sends a heartbeat (a third of the server's idle timeout), so a long generation does not look like a vanished
client; a client that dies stops sending, and the server releases its session after the idle timeout.
"""

from __future__ import annotations

import asyncio
import json as json_module
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from agentgym.episode.session import EpisodeScores, SessionConfig, ToolCallLike, ToolResult, UserTurn
from agentgym.episode.wire import (API, EnvironmentInfo, OpenSession, SessionOpened, ToolCallsRequest, ToolCallsResponse,
                                   UserTurnRequest, UserTurnResponse, WireCall, WireScores, WireSessionConfig,
                                   wire_messages)
from agentgym.errors import AgentGymError
from agentgym.tools.schemas import OpenAIFunctionToolSchema


class EnvironmentServerError(AgentGymError):
    """The environment server could not be reached, refused a request, or lost the session."""


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("error") or body.get("detail") or body)[:500]
    return str(body)[:500]


@dataclass
class _Reply:
    """One answer of the server: status, Retry-After, and the decoded JSON body (or the text when it is not JSON)."""

    status: int
    body: Any
    retry_after: str | None = None


class RemoteEnvironment:
    """An environment server as an `Environment`: its tool schemas, and sessions on it.

    `open_retry_s`: how long opening a session keeps retrying while the server answers 503 (at capacity), honouring
    its Retry-After, before the episode fails with the server's message. `request_timeout_s` bounds requests other
    than tool calls; a tool-call request may take as long as the session's tool timeouts allow, plus a margin.
    """

    def __init__(self, url: str, info: EnvironmentInfo, *, open_retry_s: float = 60.0, request_timeout_s: float = 60.0,
                 max_connections: int = 1024):
        self.url = url.rstrip("/")
        self.info = info
        self.open_retry_s = open_retry_s
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = \
            weakref.WeakKeyDictionary()

    @classmethod
    def connect(cls, url: str, *, wait_s: float = 30.0, **kwargs: Any) -> "RemoteEnvironment":
        """Read the server's environment (tool schemas, limits), waiting up to `wait_s` for it to come up."""
        deadline = time.monotonic() + wait_s
        base = url.rstrip("/")
        while True:
            try:
                response = httpx.get(f"{base}{API}/environment", timeout=10.0)
                break
            except httpx.TransportError as exc:
                if time.monotonic() > deadline:
                    raise EnvironmentServerError(
                        f"no environment server answers at {base} ({type(exc).__name__}: {exc}); start one with "
                        "`python3 -m agentgym.services.environment --tools TOOLS.yaml --port PORT` or fix "
                        "multi_turn.environment_url") from exc
                time.sleep(0.2)
        if response.status_code != 200:
            raise EnvironmentServerError(f"{base}{API}/environment answered {response.status_code}: "
                                         f"{_error_text(response.text)}; is this an agentgym environment server?")
        return cls(base, EnvironmentInfo.model_validate(response.json()), **kwargs)

    def tool_schemas(self) -> list[OpenAIFunctionToolSchema]:
        return list(self.info.tools)

    def session(self, *, extra_info: Mapping[str, Any] | None, session_id: str, config: SessionConfig) -> "RemoteSession":
        return RemoteSession(self, extra_info=extra_info, session_id=session_id, config=config)

    def client(self) -> aiohttp.ClientSession:
        """One connection pool per event loop (a client session belongs to the loop that first used it). aiohttp,
        not httpx: at hundreds of concurrent sessions httpx's pool cost several times more per request."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.closed:
            client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.max_connections))
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    async def request(self, method: str, route: str, *, json: Any = None, timeout: float | None = None) -> _Reply:
        seconds = timeout if timeout is not None else self.request_timeout_s
        try:
            async with self.client().request(method, f"{self.url}{API}{route}", json=json,
                                             timeout=aiohttp.ClientTimeout(total=seconds)) as response:
                text = await response.text()
                try:
                    body = json_module.loads(text) if text else None
                except ValueError:
                    body = text
                return _Reply(response.status, body, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise EnvironmentServerError(f"environment server {self.url} did not answer {method} {route} "
                                         f"(within {seconds:g} s): {type(exc).__name__}: {exc}") from exc


class RemoteSession:
    """One episode's session on an environment server; same interface and lifecycle as `Session`."""

    def __init__(self, environment: RemoteEnvironment, *, extra_info: Mapping[str, Any] | None, session_id: str,
                 config: SessionConfig | None = None):
        self.environment = environment
        self.session_id = session_id
        self.config = config or SessionConfig()
        self.extra_info = dict(extra_info or {})
        self.tools: list[str] = []
        self.interaction: str | None = None
        self._opened = False
        self._closed = False
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "RemoteSession":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def start(self) -> None:
        body = OpenSession(session_id=self.session_id, extra_info=self.extra_info,
                           config=WireSessionConfig.of(self.config)).model_dump(mode="json")
        deadline = time.monotonic() + self.environment.open_retry_s
        delay = 0.05
        while True:
            response = await self.environment.request("POST", "/sessions", json=body)
            if response.status != 503 or time.monotonic() >= deadline:
                break
            retry_after = float(response.retry_after or delay)
            await asyncio.sleep(min(max(retry_after, delay), max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)
        opened = SessionOpened.model_validate(self._check(response, "open the session"))
        self._opened = True
        self.tools, self.interaction = opened.tools, opened.interaction
        self._heartbeat = asyncio.ensure_future(self._beat(max(opened.idle_timeout_s / 3, 0.05)))

    async def _beat(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.environment.request("POST", f"/sessions/{self.session_id}/heartbeat", timeout=every * 2)
            except EnvironmentServerError:
                pass  # a missed beat is harmless until the idle timeout; the next real request reports a lost server

    def _check(self, response: _Reply, doing: str) -> Any:
        if response.status == 200:
            return response.body
        if response.status == 404:
            raise EnvironmentServerError(
                f"environment server {self.environment.url} no longer has session {self.session_id} (trying to "
                f"{doing}): it was closed, or released after {self.environment.info.idle_timeout_s:g} s without a "
                "request or heartbeat; raise the server's --idle-timeout if the client pauses longer")
        raise EnvironmentServerError(f"environment server {self.environment.url} could not {doing} for session "
                                     f"{self.session_id} ({response.status}): {_error_text(response.body)}")

    def _calls_timeout(self, count: int) -> float:
        waves = -(-max(count, 1) // self.config.max_parallel_calls)
        per_call = self.config.tool_call_timeout + 2 * self.config.release_timeout
        return waves * per_call + self.environment.request_timeout_s

    async def run_calls(self, calls: list[ToolCallLike]) -> list[ToolResult]:
        wire = [WireCall(name=c.name, arguments=c.arguments, id=getattr(c, "id", None)) for c in calls]
        response = await self.environment.request(
            "POST", f"/sessions/{self.session_id}/tool_calls",
            json=ToolCallsRequest(calls=wire).model_dump(mode="json"), timeout=self._calls_timeout(len(calls)))
        return [r.result() for r in ToolCallsResponse.model_validate(self._check(response, "run tool calls")).results]

    async def user_turn(self, messages: list[dict[str, Any]]) -> UserTurn | None:
        response = await self.environment.request(
            "POST", f"/sessions/{self.session_id}/user_turn",
            json=UserTurnRequest(messages=wire_messages(messages)).model_dump(mode="json"))
        return UserTurnResponse.model_validate(self._check(response, "take the user turn")).user_turn()

    async def scores(self) -> EpisodeScores:
        response = await self.environment.request("POST", f"/sessions/{self.session_id}/scores")
        return WireScores.model_validate(self._check(response, "score the episode")).scores()

    async def close(self) -> None:
        """Release the session on the server; runs to the end even if the surrounding task is being cancelled."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._opened:
            await asyncio.shield(self._delete())

    async def _delete(self) -> None:
        try:
            await self.environment.request("DELETE", f"/sessions/{self.session_id}")
        except EnvironmentServerError:
            pass  # the server is gone or unreachable: its idle timeout releases the session
