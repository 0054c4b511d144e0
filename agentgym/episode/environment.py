"""What an episode needs from its environment, declared once, so the agent loop runs unchanged against the
in-process `Session` or a `RemoteSession` talking to the environment server (agentgym.services.environment).

An `Environment` says which tools it offers (their schemas go into the prompt and into schema-aware parsers) and
opens one `EpisodeSession` per episode; the session runs the episode's tool calls, user turns and scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agentgym.episode.session import EpisodeScores, Session, SessionConfig, ToolCallLike, ToolResult, UserTurn
from agentgym.interactions.base import BaseInteraction
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import OpenAIFunctionToolSchema


class EpisodeSession(Protocol):
    """The `Session` contract: `async with` it, then run calls, take user turns, score; closing releases all."""

    async def __aenter__(self) -> "EpisodeSession": ...

    async def __aexit__(self, *exc_info: Any) -> None: ...

    async def run_calls(self, calls: list[ToolCallLike]) -> list[ToolResult]: ...

    async def user_turn(self, messages: list[dict[str, Any]]) -> UserTurn | None: ...

    async def scores(self) -> EpisodeScores: ...

    async def close(self) -> None: ...


class Environment(Protocol):
    """Where an agent loop's sessions come from."""

    def tool_schemas(self) -> list[OpenAIFunctionToolSchema]:
        """Every tool the environment registers, in registry order (a row's `tool_selection` picks among them)."""
        ...

    def session(self, *, extra_info: Mapping[str, Any] | None, session_id: str, config: SessionConfig) -> EpisodeSession:
        """A new, unstarted session for one dataset row's `extra_info`."""
        ...


class LocalEnvironment:
    """Tools and interactions in this process: what the agent loop uses when no environment server is named."""

    def __init__(self, tools: Mapping[str, BaseTool], interactions: Mapping[str, BaseInteraction] | None = None):
        self.tools = dict(tools)
        self.interactions = dict(interactions or {})

    def tool_schemas(self) -> list[OpenAIFunctionToolSchema]:
        return [tool.tool_schema for tool in self.tools.values()]

    def session(self, *, extra_info: Mapping[str, Any] | None, session_id: str, config: SessionConfig) -> Session:
        return Session(self.tools, extra_info=extra_info, interactions=self.interactions, config=config,
                       session_id=session_id)


def tool_dicts(schemas: Sequence[OpenAIFunctionToolSchema]) -> list[dict[str, Any]]:
    """The schemas as the chat template renders them (the agent loop's and the gateway's prompts agree on this)."""
    return [schema.model_dump(exclude_none=True) for schema in schemas]
