"""The policy as an OpenAI- and Anthropic-compatible endpoint that records token-exact trajectories per session.

Routes:
  GET  /v1/models                              the served model
  POST /v1/chat/completions                    OpenAI Chat Completions (tools, tool_calls, tool messages; stream)
  POST /v1/messages                            Anthropic Messages (tool_use / tool_result blocks)
  POST /sessions/{id}/v1/chat/completions      the same, the session in the path: give an agent
  POST /sessions/{id}/v1/messages              base_url=<gateway>/sessions/<id>/v1 (OpenAI) or <gateway>/sessions/<id>
  POST /v1/sessions                            register a session ({session_id, row?, group_id?}) before its agent runs
  POST /v1/sessions/{id}/reward                the agent reports its score ({"reward": float, "metrics": {...}})
  GET  /v1/sessions/{id}                       the session's counts (requests, branches, token mismatches, ...)
  GET  /v1/sessions/{id}/trajectory            its recorded main trajectory (scored by the configured reward if set)
  DELETE /v1/sessions/{id}                     forget it
A request names its session by the path, the `X-Session-Id` header, or the body's `user` (OpenAI) /
`metadata.user_id` (Anthropic), in that order.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentgym.services.gateway.formats import (ChatCompletionRequest, MessagesRequest, anthropic_message,
                                               anthropic_messages, anthropic_tools, chat_completion,
                                               chat_completion_chunks, normal_tools, openai_messages)
from agentgym.services.gateway.recorder import GatewayRequestError, TrajectoryRecorder
from agentgym.trajectory import Trajectory

log = logging.getLogger(__name__)

SESSION_HEADER = "x-session-id"
RewardFn = Callable[[Trajectory], "float | Awaitable[float]"]


@dataclass(frozen=True)
class GatewayConfig:
    model_name: str = "agentgym-policy"
    # False: only sessions registered with POST /v1/sessions are served (a rollout's gateway: stray traffic is a bug)
    open_sessions: bool = True
    max_sessions: int = 100_000


class RegisterSession(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str
    group_id: str | None = None
    row: dict[str, Any] = Field(default_factory=dict)


class ReportReward(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reward: float
    metrics: dict[str, Any] = Field(default_factory=dict)


class Gateway:
    """Owns a `TrajectoryRecorder`; `app()` is the HTTP face. `reward_fn` (optional) scores a session's recorded
    trajectory when it is read and the agent reported no reward."""

    def __init__(self, recorder: TrajectoryRecorder, config: GatewayConfig | None = None,
                 reward_fn: Callable[[Trajectory], Any] | None = None):
        self.recorder = recorder
        self.config = config or GatewayConfig()
        self.reward_fn = reward_fn

    def register(self, session_id: str, *, row: dict[str, Any] | None = None, group_id: str | None = None) -> None:
        if session_id in self.recorder.sessions:
            raise GatewayRequestError(f"session {session_id} is already registered; session ids must be unique")
        self.recorder.session(session_id, row=row, group_id=group_id)

    def report_reward(self, session_id: str, reward: float, metrics: dict[str, Any] | None = None) -> None:
        record = self.recorder.session(session_id, create=False)
        if record is None:
            raise KeyError(session_id)
        record.reported_reward = float(reward)
        record.reported_metrics = dict(metrics or {})

    async def scored_trajectory(self, session_id: str) -> Trajectory | None:
        traj = self.recorder.trajectory(session_id)
        record = self.recorder.sessions.get(session_id)
        if traj is not None and record is not None and record.reported_reward is None and self.reward_fn is not None:
            value = self.reward_fn(traj)
            if inspect.isawaitable(value):
                value = await value
            traj.final_score = float(value)
        return traj

    def _session_of(self, path_id: str | None, request: Request, body_id: str | None) -> str:
        session_id = path_id or request.headers.get(SESSION_HEADER) or body_id
        if not session_id:
            raise GatewayRequestError(
                "the request names no session: use the base URL <gateway>/sessions/<id>/v1, send the header "
                "`X-Session-Id: <id>`, or set the body's `user` field (OpenAI) / `metadata.user_id` (Anthropic)")
        if session_id not in self.recorder.sessions:
            if not self.config.open_sessions:
                raise LookupError(f"session {session_id} is not registered with this gateway (POST /v1/sessions "
                                  "first); this gateway serves registered sessions only")
            if len(self.recorder.sessions) >= self.config.max_sessions:
                raise OverflowError(f"the gateway holds {len(self.recorder.sessions)} sessions, its limit; fetch and "
                                    "DELETE finished sessions or raise max_sessions")
        return session_id

    def app(self) -> FastAPI:
        app = FastAPI(title="agentgym gateway")
        recorder = self.recorder
        model = self.config.model_name

        def openai_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
            return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}},
                                status_code=status)

        def anthropic_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
            return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status)

        async def body_json(request: Request) -> Any:
            try:
                return json.loads(await request.body())
            except ValueError as exc:
                raise GatewayRequestError(f"the body is not JSON: {exc}") from exc

        async def chat(request: Request, path_session: str | None) -> Any:
            try:
                body = ChatCompletionRequest.model_validate(await body_json(request))
                if body.n not in (None, 1):
                    raise GatewayRequestError("n > 1 is not supported: one session records one trajectory; send "
                                              "one request per sample (one session each)")
                if body.stop:
                    raise GatewayRequestError("`stop` sequences are not supported: the model's end-of-turn token ends "
                                              "each turn; drop `stop`")
                session_id = self._session_of(path_session, request, body.user)
                completion = await recorder.complete(
                    session_id, openai_messages(body.messages), normal_tools(body.tools),
                    max_tokens=body.max_completion_tokens or body.max_tokens, temperature=body.temperature,
                    top_p=body.top_p)
            except (GatewayRequestError, ValidationError) as exc:
                return openai_error(400, str(exc))
            except LookupError as exc:
                return openai_error(404, str(exc), "not_found_error")
            except OverflowError as exc:
                return openai_error(503, str(exc), "overloaded_error")
            response = chat_completion(completion, body.model or model, logprobs=bool(body.logprobs),
                                       tokenizer=recorder.tokenizer)
            if not body.stream:
                return response

            async def events():
                for chunk in chat_completion_chunks(response):
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        async def messages(request: Request, path_session: str | None) -> Any:
            try:
                body = MessagesRequest.model_validate(await body_json(request))
                if body.stream:
                    raise GatewayRequestError("stream=true is not supported on /v1/messages; send stream=false")
                if body.stop_sequences:
                    raise GatewayRequestError("`stop_sequences` are not supported: the model's end-of-turn token ends "
                                              "each turn")
                user = (body.metadata or {}).get("user_id")
                session_id = self._session_of(path_session, request, user)
                completion = await recorder.complete(session_id, anthropic_messages(body), anthropic_tools(body.tools),
                                                     max_tokens=body.max_tokens, temperature=body.temperature,
                                                     top_p=body.top_p)
            except (GatewayRequestError, ValidationError) as exc:
                return anthropic_error(400, str(exc))
            except LookupError as exc:
                return anthropic_error(404, str(exc), "not_found_error")
            except OverflowError as exc:
                return anthropic_error(529, str(exc), "overloaded_error")
            return anthropic_message(completion, body.model or model)

        @app.get("/health")
        @app.get("/v1/health")
        async def health() -> dict[str, bool]:
            return {"ok": True}

        @app.get("/v1/models")
        @app.get("/sessions/{session_id}/v1/models")
        async def models(session_id: str | None = None) -> Any:
            return {"object": "list", "data": [{"id": model, "object": "model", "created": int(time.time()),
                                                "owned_by": "agentgym"}]}

        @app.post("/v1/chat/completions")
        async def chat_plain(request: Request) -> Any:
            return await chat(request, None)

        @app.post("/sessions/{session_id}/v1/chat/completions")
        async def chat_in_path(session_id: str, request: Request) -> Any:
            return await chat(request, session_id)

        @app.post("/v1/messages")
        async def messages_plain(request: Request) -> Any:
            return await messages(request, None)

        @app.post("/sessions/{session_id}/v1/messages")
        async def messages_in_path(session_id: str, request: Request) -> Any:
            return await messages(request, session_id)

        @app.post("/v1/sessions")
        async def register(body: RegisterSession) -> Any:
            try:
                self.register(body.session_id, row=body.row, group_id=body.group_id)
            except GatewayRequestError as exc:
                return JSONResponse({"error": str(exc)}, status_code=409)
            return {"session_id": body.session_id}

        def unknown(session_id: str) -> JSONResponse:
            return JSONResponse({"error": f"no session {session_id} on this gateway"}, status_code=404)

        @app.post("/v1/sessions/{session_id}/reward")
        @app.post("/sessions/{session_id}/v1/reward")
        async def reward(session_id: str, body: ReportReward) -> Any:
            try:
                self.report_reward(session_id, body.reward, body.metrics)
            except KeyError:
                return unknown(session_id)
            return {"session_id": session_id, "reward": body.reward}

        @app.get("/v1/sessions/{session_id}")
        async def summary(session_id: str) -> Any:
            record = recorder.sessions.get(session_id)
            return unknown(session_id) if record is None else record.summary()

        @app.get("/v1/sessions/{session_id}/trajectory")
        async def trajectory(session_id: str) -> Any:
            traj = await self.scored_trajectory(session_id)
            if traj is None:
                return JSONResponse({"error": f"session {session_id} has no recorded turn on this gateway"},
                                    status_code=404)
            return traj.to_dict()

        @app.delete("/v1/sessions/{session_id}")
        async def forget(session_id: str) -> Any:
            return {"deleted": recorder.drop(session_id) is not None}

        return app
