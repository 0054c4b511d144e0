"""A Session binds one dataset row to tool instances and an interaction for the length of one episode.

It is the only place that calls the tool/interaction lifecycle, so it is the one place that guarantees
every created instance is released — on success, on errors and on cancellation.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol
from uuid import uuid4

from agentgym.interactions.base import BaseInteraction
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import ToolResponse
from agentgym.tools.validation import argument_errors, format_argument_error


class ToolCallLike(Protocol):
    """What the session needs of a parsed call; parsers' call objects and verl's OpenAIFunctionToolCall both fit."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class SessionConfig:
    max_parallel_calls: int = 8
    tool_call_timeout: float = 60.0
    release_timeout: float = 30.0


@dataclass
class ToolResult:
    """The outcome of one call, in call order. `error` is set when the model's call did not run as asked."""

    name: str
    call_id: str
    response: ToolResponse
    reward: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    latency_s: float = 0.0

    @property
    def text(self) -> str:
        return self.response.text or ""


@dataclass
class UserTurn:
    should_terminate: bool
    content: str
    reward: float
    metrics: dict[str, Any]


@dataclass
class EpisodeScores:
    tool_rewards: dict[str, float]
    interaction_score: float | None

    @property
    def total(self) -> float:
        return sum(self.tool_rewards.values()) + (self.interaction_score or 0.0)


def _row_kwargs(extra_info: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    extra_info = dict(extra_info or {})
    tools_kwargs = extra_info.get("tools_kwargs") or {}
    interaction_kwargs = extra_info.get("interaction_kwargs") or {}
    if not isinstance(tools_kwargs, dict) or not isinstance(interaction_kwargs, dict):
        raise ValueError("extra_info.tools_kwargs and extra_info.interaction_kwargs must be mappings in the dataset row.")
    return tools_kwargs, interaction_kwargs


class Session:
    """One episode's view of the environment. Use as `async with Session(...) as session:`.

    Tool instances are created lazily, on the first call of each tool, with the row's
    `tools_kwargs.<tool>.create_kwargs` and an instance id chosen here, so that an instance whose
    `create` was interrupted is still released.
    """

    def __init__(
        self,
        tools: Mapping[str, BaseTool],
        *,
        extra_info: Mapping[str, Any] | None = None,
        interactions: Mapping[str, BaseInteraction] | None = None,
        config: SessionConfig | None = None,
        session_id: str | None = None,
    ):
        self.session_id = session_id or uuid4().hex
        self.config = config or SessionConfig()
        self.tools = dict(tools)
        self._tools_kwargs, self._interaction_kwargs = _row_kwargs(extra_info)
        unknown = sorted(set(self._tools_kwargs) - set(self.tools))
        if unknown:
            raise ValueError(
                f"the row's extra_info.tools_kwargs names tool(s) {unknown} that are not registered; "
                f"registered tools: {sorted(self.tools)}. Add them to the tool config or fix the row."
            )
        self.interaction = self._pick_interaction(interactions or {})
        self._attempted: dict[str, str] = {}
        self._ready: dict[str, str] = {}
        self._creating: dict[str, asyncio.Task[str]] = {}
        self._interaction_id: str | None = None
        self._semaphore = asyncio.Semaphore(self.config.max_parallel_calls)
        self._closed = False
        self.release_errors: list[BaseException] = []

    def _pick_interaction(self, interactions: Mapping[str, BaseInteraction]) -> BaseInteraction | None:
        if not self._interaction_kwargs:
            return None
        name = self._interaction_kwargs.get("name")
        if name is None and len(interactions) == 1:
            return next(iter(interactions.values()))
        if name not in interactions:
            raise ValueError(
                f"the row asks for interaction `{name}` but the registered interactions are {sorted(interactions)}; "
                "set extra_info.interaction_kwargs.name to one of them or register it in the interaction config."
            )
        return interactions[name]

    async def __aenter__(self) -> "Session":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def start(self) -> None:
        if self.interaction is not None:
            kwargs = {k: v for k, v in self._interaction_kwargs.items() if k != "name"}
            instance_id = f"{self.session_id}-interaction"
            self._interaction_id = instance_id
            await self.interaction.start_interaction(instance_id, **kwargs)

    async def _instance(self, name: str) -> str:
        """Create the tool's instance once, even when several calls of one turn race for it."""
        if name in self._ready:
            return self._ready[name]
        task = self._creating.get(name)
        if task is None:
            instance_id = f"{self.session_id}-{name}"
            self._attempted[name] = instance_id
            create_kwargs = self._tools_kwargs.get(name, {}).get("create_kwargs", {})
            task = asyncio.ensure_future(self.tools[name].create(instance_id, **create_kwargs))
            self._creating[name] = task
        try:
            created_id, _ = await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._creating.pop(name, None)
            raise
        self._creating.pop(name, None)
        self._ready[name] = self._attempted[name] = created_id
        return created_id

    async def run_calls(self, calls: list[ToolCallLike]) -> list[ToolResult]:
        """Run one turn's calls concurrently (at most `max_parallel_calls` at a time); results keep call order."""
        return list(await asyncio.gather(*(self._run_one(index, call) for index, call in enumerate(calls))))

    async def _run_one(self, index: int, call: ToolCallLike) -> ToolResult:
        name = call.name
        call_id = getattr(call, "id", None) or getattr(call, "call_id", None) or f"call_{index}"
        tool = self.tools.get(name)
        if tool is None:
            available = ", ".join(f"`{n}`" for n in sorted(self.tools)) or "none"
            return self._error(name, call_id, f"Error: unknown tool `{name}`. Available tools: {available}.")
        arguments = call.arguments
        if not isinstance(arguments, dict):
            return self._error(
                name, call_id, f"Error: arguments for tool `{name}` must be a JSON object, got {type(arguments).__name__}."
            )
        problems = argument_errors(tool.tool_schema, arguments)
        if problems:
            return self._error(name, call_id, format_argument_error(name, problems, tool.tool_schema))
        timeout = self._execute_timeout(tool)
        async with self._semaphore:
            started = time.perf_counter()
            try:
                instance_id = await self._instance(name)
                execute_kwargs = self._tools_kwargs.get(name, {}).get("execute_kwargs", {})
                response, reward, metrics = await asyncio.wait_for(
                    tool.execute(instance_id, arguments, **execute_kwargs), timeout=timeout
                )
            except asyncio.TimeoutError:
                return self._error(
                    name, call_id, f"Error: tool `{name}` did not finish within {timeout:g} s.",
                    latency=time.perf_counter() - started,
                )
            except Exception as exc:  # a tool bug must not end the episode: the model sees it, the metrics keep it
                return self._error(
                    name,
                    call_id,
                    f"Error: tool `{name}` failed: {type(exc).__name__}: {exc}",
                    latency=time.perf_counter() - started,
                    metrics={"traceback": traceback.format_exc(limit=5)},
                )
        if not isinstance(response, ToolResponse):
            response = ToolResponse(text=str(response))
        return ToolResult(
            name=name,
            call_id=call_id,
            response=response,
            reward=float(reward or 0.0),
            metrics=dict(metrics or {}),
            latency_s=time.perf_counter() - started,
        )

    def _execute_timeout(self, tool: BaseTool) -> float:
        """The tool's own bound (`execute_timeout`, e.g. from its YAML config) when it has one, else the session's."""
        own = getattr(tool, "execute_timeout", None)
        return float(own) if own else self.config.tool_call_timeout

    @staticmethod
    def _error(name: str, call_id: str, text: str, *, latency: float = 0.0, metrics: dict | None = None) -> ToolResult:
        return ToolResult(name=name, call_id=call_id, response=ToolResponse(text=text), error=text, latency_s=latency, metrics=metrics or {})

    async def user_turn(self, messages: list[dict[str, Any]]) -> UserTurn | None:
        """The interaction's reply to the conversation so far, or None when the row has no interaction."""
        if self.interaction is None or self._interaction_id is None:
            return None
        terminate, content, reward, metrics = await self.interaction.generate_response(self._interaction_id, messages)
        return UserTurn(bool(terminate), str(content), float(reward or 0.0), dict(metrics or {}))

    async def scores(self) -> EpisodeScores:
        """Outcome rewards: each created tool's calc_reward and the interaction's calculate_score."""
        tool_rewards: dict[str, float] = {}
        for name, instance_id in list(self._ready.items()):
            kwargs = self._tools_kwargs.get(name, {}).get("calc_reward_kwargs", {})
            tool_rewards[name] = float(await self.tools[name].calc_reward(instance_id, **kwargs))
        interaction_score = None
        if self.interaction is not None and self._interaction_id is not None:
            interaction_score = float(await self.interaction.calculate_score(self._interaction_id))
        return EpisodeScores(tool_rewards=tool_rewards, interaction_score=interaction_score)

    async def close(self) -> None:
        """Release every instance; runs to the end even if the surrounding task is being cancelled."""
        if self._closed:
            return
        self._closed = True
        await asyncio.shield(self._release_all())

    async def _release_all(self) -> None:
        pending = [task for task in self._creating.values() if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.config.release_timeout)
        jobs = []
        for name, instance_id in self._attempted.items():
            kwargs = self._tools_kwargs.get(name, {}).get("release_kwargs", {})
            jobs.append(self.tools[name].release(instance_id, **kwargs))
        if self.interaction is not None and self._interaction_id is not None:
            jobs.append(self.interaction.finalize_interaction(self._interaction_id))
        results = await asyncio.gather(
            *(asyncio.wait_for(job, timeout=self.config.release_timeout) for job in jobs), return_exceptions=True
        )
        self.release_errors = [r for r in results if isinstance(r, BaseException)]
