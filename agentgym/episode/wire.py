"""The environment server's wire format (JSON over HTTP), shared by the server and `RemoteSession`.

Routes (all under /v1):
  GET    /environment                    -> EnvironmentInfo (tool schemas, interaction names, limits)
  POST   /sessions                       OpenSession -> SessionOpened (503 + Retry-After when at capacity)
  POST   /sessions/{id}/tool_calls       ToolCallsRequest -> ToolCallsResponse
  POST   /sessions/{id}/user_turn        UserTurnRequest -> UserTurnResponse
  POST   /sessions/{id}/scores           -> WireScores
  POST   /sessions/{id}/heartbeat        -> {} (keeps an idle session alive while the client generates)
  DELETE /sessions/{id}                  -> {} (releases every instance; idempotent)
  GET    /stats                          -> ServerStats
Errors are `{"error": message}` with 4xx/5xx; 404 names a session that is closed or never was.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentgym.episode.session import EpisodeScores, SessionConfig, ToolResult, UserTurn
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

API = "/v1"


class WireSessionConfig(BaseModel):
    max_parallel_calls: int = Field(8, ge=1)
    tool_call_timeout: float = Field(60.0, gt=0)
    release_timeout: float = Field(30.0, gt=0)
    tool_instance_lifetime: Literal["trajectory", "call"] = "trajectory"

    @classmethod
    def of(cls, config: SessionConfig) -> "WireSessionConfig":
        return cls(max_parallel_calls=config.max_parallel_calls, tool_call_timeout=config.tool_call_timeout,
                   release_timeout=config.release_timeout, tool_instance_lifetime=config.tool_instance_lifetime)

    def session_config(self) -> SessionConfig:
        return SessionConfig(**self.model_dump())


class EnvironmentInfo(BaseModel):
    tools: list[OpenAIFunctionToolSchema]
    interactions: list[str]
    max_sessions: int
    idle_timeout_s: float


class OpenSession(BaseModel):
    session_id: str
    extra_info: dict[str, Any] = Field(default_factory=dict)
    config: WireSessionConfig = Field(default_factory=WireSessionConfig)


class SessionOpened(BaseModel):
    session_id: str
    tools: list[str]  # the tools this row offers (its tool_selection), in registry order
    interaction: str | None
    idle_timeout_s: float


class WireCall(BaseModel):
    """One parsed call. `arguments` is whatever the model wrote (the server validates it against the schema)."""

    name: str
    arguments: Any = None
    id: str | None = None


class ToolCallsRequest(BaseModel):
    calls: list[WireCall]


class WireToolResult(BaseModel):
    name: str
    call_id: str
    text: str | None = None
    image: list[str] | None = None  # data URLs (PNG), as tools' image payloads cross the wire
    video: list[Any] | None = None
    reward: float = 0.0
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    latency_s: float = 0.0
    error_kind: str | None = None

    @classmethod
    def of(cls, result: ToolResult) -> "WireToolResult":
        response = result.response
        return cls(name=result.name, call_id=result.call_id, text=response.text,
                   image=[image_url(i) for i in response.image] if response.image else None,
                   video=json_safe(response.video) if response.video else None, reward=result.reward,
                   metrics=json_safe(result.metrics), error=result.error, latency_s=result.latency_s,
                   error_kind=result.error_kind)

    def result(self) -> ToolResult:
        return ToolResult(name=self.name, call_id=self.call_id,
                          response=ToolResponse(text=self.text, image=self.image, video=self.video), reward=self.reward,
                          metrics=dict(self.metrics), error=self.error, latency_s=self.latency_s,
                          error_kind=self.error_kind)


class ToolCallsResponse(BaseModel):
    results: list[WireToolResult]


class UserTurnRequest(BaseModel):
    messages: list[dict[str, Any]]


class WireUserTurn(BaseModel):
    should_terminate: bool
    content: str
    reward: float
    metrics: dict[str, Any] = Field(default_factory=dict)


class UserTurnResponse(BaseModel):
    turn: WireUserTurn | None

    @classmethod
    def of(cls, turn: UserTurn | None) -> "UserTurnResponse":
        if turn is None:
            return cls(turn=None)
        return cls(turn=WireUserTurn(should_terminate=turn.should_terminate, content=turn.content, reward=turn.reward,
                                     metrics=json_safe(turn.metrics)))

    def user_turn(self) -> UserTurn | None:
        t = self.turn
        return None if t is None else UserTurn(t.should_terminate, t.content, t.reward, dict(t.metrics))


class WireScores(BaseModel):
    tool_rewards: dict[str, float]
    interaction_score: float | None
    reward_metrics: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, scores: EpisodeScores) -> "WireScores":
        return cls(tool_rewards=scores.tool_rewards, interaction_score=scores.interaction_score,
                   reward_metrics=json_safe(scores.reward_metrics))

    def scores(self) -> EpisodeScores:
        return EpisodeScores(dict(self.tool_rewards), self.interaction_score, dict(self.reward_metrics))


class ServerStats(BaseModel):
    open_sessions: int
    opened: int
    closed: int
    reaped: int  # closed by the server because their client stopped sending (no request, no heartbeat)
    refused: int  # opens answered 503 because the server was at max_sessions
    release_errors: int
    tool_calls: int


def image_url(value: Any) -> str:
    """A tool's image payload (bytes, PIL image, path or data URL) as a PNG data URL."""
    if isinstance(value, str) and value.startswith("data:"):
        return value
    from agentgym.multimodal.images import as_png, data_url

    return data_url(as_png(value))


def json_safe(value: Any) -> Any:
    """`value` with anything JSON cannot hold made readable: bytes as base64 text, other objects by repr.

    Tools' metrics are free-form (verl returns whatever a tool likes); the wire must never fail over them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:2000]


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as JSON: image parts' payloads become data URLs (the interaction reads text; images stay viewable)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image" and "image" in part:
                    part = {**part, "image": image_url(part["image"])}
                parts.append(json_safe(part))
            message = {**message, "content": parts}
        out.append(json_safe(message))
    return out
