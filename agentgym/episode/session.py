"""A Session binds one dataset row to tool instances and an interaction for the length of one episode.

It is the only place that calls the tool/interaction lifecycle, so it is the one place that guarantees
every created instance is released — on success, on errors and on cancellation.
"""

from __future__ import annotations

import asyncio
import numbers
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol
from uuid import uuid4

from agentgym.interactions.base import BaseInteraction
from agentgym.interactions.selection import select_interaction
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import ToolResponse
from agentgym.tools.validation import argument_errors, format_argument_error
from agentgym.utils.rollout_trace import recording_spans

ToolInstanceLifetime = Literal["trajectory", "call"]


class ToolCallLike(Protocol):
    """What the session needs of a parsed call; parsers' call objects and verl's OpenAIFunctionToolCall both fit."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class SessionConfig:
    """`tool_instance_lifetime`: `trajectory` creates one instance per tool and episode, scored by `calc_reward` at
    the end (verl <= 0.6's SGLang multi-turn rollout); `call` creates and releases one per call and calls no
    `calc_reward` (verl's ToolAgentLoop, 0.5 on, the only multi-turn path from 0.7)."""

    max_parallel_calls: int = 8
    tool_call_timeout: float = 60.0
    release_timeout: float = 30.0
    tool_instance_lifetime: ToolInstanceLifetime = "trajectory"


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
    # unknown_tool | unselected_tool | invalid_arguments | timeout | tool_exception (parse failures never reach the
    # session)
    error_kind: str | None = None

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
    """`reward_metrics` keeps what a scorer returned when it was not a number (it then scores 0)."""

    tool_rewards: dict[str, float]
    interaction_score: float | None
    reward_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.tool_rewards.values()) + (self.interaction_score or 0.0)


def as_reward(value: Any) -> tuple[float, dict[str, Any] | None]:
    """A reward as a float, and, when it is not a number, a record of what it was.

    verl accepts whatever a scorer returns (its SandboxFusionTool's calc_reward returns `[]`); an episode must
    never fail over a reward's type, so anything that is not a number scores 0 and is kept as a metric.
    """
    if value is None:
        return 0.0, None
    if isinstance(value, numbers.Real):
        return float(value), None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__float__"):
        try:
            return float(value), None
        except (TypeError, ValueError):
            pass
    return 0.0, {"type": type(value).__name__, "value": repr(value)[:200]}


def _row_kwargs(extra_info: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    extra_info = dict(extra_info or {})
    tools_kwargs = extra_info.get("tools_kwargs") or {}
    interaction_kwargs = extra_info.get("interaction_kwargs") or {}
    if not isinstance(tools_kwargs, dict) or not isinstance(interaction_kwargs, dict):
        raise ValueError("extra_info.tools_kwargs and extra_info.interaction_kwargs must be mappings in the dataset row.")
    # A parquet file stores a tool absent from this row as null (its struct column spans all rows): nothing asked.
    return {name: kwargs for name, kwargs in tools_kwargs.items() if kwargs is not None}, interaction_kwargs


def tool_selection(extra_info: Mapping[str, Any] | None) -> list[str] | None:
    """The row's `extra_info.tool_selection` (verl's per-row tool subset): the tool names it offers, or None when
    the row offers every registered tool (no key, null, or an empty list, as in verl)."""
    chosen = (extra_info or {}).get("tool_selection")
    if chosen is None or (hasattr(chosen, "__len__") and len(chosen) == 0):
        return None
    if isinstance(chosen, str) or not all(isinstance(name, str) for name in chosen):
        raise ValueError(f"extra_info.tool_selection must be a list of tool names, got {chosen!r:.120}.")
    return list(chosen)


def select_tools(tools: Mapping[str, BaseTool], extra_info: Mapping[str, Any] | None) -> dict[str, BaseTool]:
    """The tools a row offers the model, in the registry's order. A selected name that is not registered is an
    error (verl skips it silently; here it is a typo that would hide a tool)."""
    chosen = tool_selection(extra_info)
    if chosen is None or not tools:  # as verl: a run without tools ignores the selection
        return dict(tools)
    unknown = sorted(set(chosen) - set(tools))
    if unknown:
        raise ValueError(f"the row's extra_info.tool_selection names tool(s) {unknown} that are not registered; "
                         f"registered tools: {sorted(tools)}. Register them or fix the row.")
    return {name: tool for name, tool in tools.items() if name in chosen}


def _created_id(tool: BaseTool, created: Any) -> str:
    """The instance id from `create`'s result: verl's `(instance_id, ToolResponse)`, or a bare id (older verl
    tools), accepted with a warning."""
    if isinstance(created, str):
        warnings.warn(f"{type(tool).__name__}.create returned only an instance id; agentgym uses it, but the "
                      "current verl signature returns (instance_id, ToolResponse): write "
                      "`return instance_id, ToolResponse()`.", UserWarning, stacklevel=2)
        return created
    if isinstance(created, (tuple, list)) and len(created) == 2:
        return created[0]
    raise TypeError(f"{type(tool).__name__}.create must return (instance_id, ToolResponse), got {created!r:.120}")


class Session:
    """One episode's view of the environment. Use as `async with Session(...) as session:`.

    Tool instances are created lazily, on the first call of each tool, with the row's
    `tools_kwargs.<tool>.create_kwargs` and an instance id chosen here, so that an instance whose
    `create` was interrupted is still released. With `tool_instance_lifetime="call"` each call gets its own
    instance, released as soon as the call ends (verl's ToolAgentLoop).
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
        self.registered = dict(tools)
        self.tools = select_tools(tools, extra_info)
        self._tools_kwargs, self._interaction_kwargs = _row_kwargs(extra_info)
        # As verl: a run without tools ignores the row's tools_kwargs (an interaction-only run on tool + interaction
        # rows). With tools registered, a name that is not one of them is a typo that would lose its kwargs.
        unknown = sorted(set(self._tools_kwargs) - set(self.registered)) if self.registered else []
        if unknown:
            raise ValueError(
                f"the row's extra_info.tools_kwargs names tool(s) {unknown} that are not registered; "
                f"registered tools: {sorted(self.registered)}. Add them to the tool config or fix the row."
            )
        interactions = interactions or {}
        chosen = select_interaction(self._interaction_kwargs, list(interactions))
        self.interaction = None if chosen is None else interactions[chosen]
        self._attempted: dict[str, str] = {}
        self._ready: dict[str, str] = {}
        self._creating: dict[str, asyncio.Task[str]] = {}
        self._interaction_id: str | None = None
        self._semaphore = asyncio.Semaphore(self.config.max_parallel_calls)
        self._closed = False
        self._calls = 0
        self.release_errors: list[BaseException] = []

    async def __aenter__(self) -> "Session":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def start(self) -> None:
        if self.interaction is not None:
            # The row's kwargs as they are, `name` included, to start_interaction and generate_response: as verl.
            instance_id = f"{self.session_id}-interaction"
            self._interaction_id = instance_id
            await self.interaction.start_interaction(instance_id, **self._interaction_kwargs)

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
            created_id = _created_id(self.tools[name], await asyncio.shield(task))
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
            if name in self.registered:
                return self._error(name, call_id, f"Error: tool `{name}` is not available in this task. Available "
                                                  f"tools: {available}.", kind="unselected_tool")
            return self._error(name, call_id, f"Error: unknown tool `{name}`. Available tools: {available}.",
                               kind="unknown_tool")
        arguments = call.arguments
        if not isinstance(arguments, dict):
            return self._error(
                name, call_id,
                f"Error: arguments for tool `{name}` must be a JSON object, got {type(arguments).__name__}.",
                kind="invalid_arguments",
            )
        problems = argument_errors(tool.tool_schema, arguments)
        if problems:
            return self._error(name, call_id, format_argument_error(name, problems, tool.tool_schema),
                               kind="invalid_arguments")
        async with self._semaphore:
            started = time.perf_counter()
            spans: list[dict[str, Any]] = []
            try:
                with recording_spans() as spans:
                    response, reward, metrics = await self._execute(name, tool, arguments)
            except asyncio.TimeoutError:
                return self._error(
                    name, call_id, f"Error: tool `{name}` did not finish within {self._execute_timeout(tool):g} s.",
                    kind="timeout", latency=time.perf_counter() - started,
                    metrics={"trace": spans} if spans else None,
                )
            except Exception as exc:  # a tool bug must not end the episode: the model sees it, the metrics keep it
                return self._error(
                    name,
                    call_id,
                    f"Error: tool `{name}` failed: {type(exc).__name__}: {exc}",
                    kind="tool_exception",
                    latency=time.perf_counter() - started,
                    metrics={"traceback": traceback.format_exc(limit=5), **({"trace": spans} if spans else {})},
                )
        if not isinstance(response, ToolResponse):
            response = ToolResponse(text=str(response))
        metrics = dict(metrics or {})
        step_reward, odd = as_reward(reward)
        if odd is not None:
            metrics["non_numeric_reward"] = odd
        if spans:
            metrics["trace"] = spans
        return ToolResult(
            name=name,
            call_id=call_id,
            response=response,
            reward=step_reward,
            metrics=metrics,
            latency_s=time.perf_counter() - started,
        )

    async def _execute(self, name: str, tool: BaseTool, arguments: dict[str, Any]) -> tuple[Any, Any, Any]:
        kwargs = self._tools_kwargs.get(name, {})
        timeout = self._execute_timeout(tool)
        if self.config.tool_instance_lifetime == "trajectory":
            instance_id = await self._instance(name)
            return await asyncio.wait_for(tool.execute(instance_id, arguments, **kwargs.get("execute_kwargs", {})), timeout)
        self._calls += 1
        instance_id = f"{self.session_id}-{name}-{self._calls}"
        release_kwargs = kwargs.get("release_kwargs", {})
        create_kwargs = dict(kwargs.get("create_kwargs") or {})
        try:
            # ToolAgentLoop passes them nested (`create_kwargs=`); tools of the older API read them spread: give both.
            instance_id, _ = await tool.create(instance_id, **create_kwargs, create_kwargs=create_kwargs)
        except asyncio.CancelledError:  # it may exist half-made: release it, as the trajectory lifetime does
            await asyncio.shield(self._release_one(tool, instance_id, release_kwargs))
            raise
        try:
            return await asyncio.wait_for(tool.execute(instance_id, arguments, **kwargs.get("execute_kwargs", {})), timeout)
        finally:
            await asyncio.shield(self._release_one(tool, instance_id, release_kwargs))

    async def _release_one(self, tool: BaseTool, instance_id: str, kwargs: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(tool.release(instance_id, **kwargs), self.config.release_timeout)
        except Exception as exc:
            self.release_errors.append(exc)

    def _execute_timeout(self, tool: BaseTool) -> float:
        """The tool's own bound (`execute_timeout`, e.g. from its YAML config) when it has one, else the session's."""
        own = getattr(tool, "execute_timeout", None)
        return float(own) if own else self.config.tool_call_timeout

    @staticmethod
    def _error(name: str, call_id: str, text: str, *, kind: str, latency: float = 0.0,
               metrics: dict | None = None) -> ToolResult:
        return ToolResult(name=name, call_id=call_id, response=ToolResponse(text=text), error=text, error_kind=kind,
                          latency_s=latency, metrics=metrics or {})

    async def user_turn(self, messages: list[dict[str, Any]]) -> UserTurn | None:
        """The interaction's reply to the conversation so far, or None when the row has no interaction."""
        if self.interaction is None or self._interaction_id is None:
            return None
        terminate, content, reward, metrics = await self.interaction.generate_response(
            self._interaction_id, messages, **self._interaction_kwargs
        )
        metrics = dict(metrics or {})
        turn_reward, odd = as_reward(reward)
        if odd is not None:
            metrics["non_numeric_reward"] = odd
        return UserTurn(bool(terminate), str(content), turn_reward, metrics)

    async def scores(self) -> EpisodeScores:
        """Outcome rewards: each created tool's calc_reward and the interaction's calculate_score."""
        tool_rewards: dict[str, float] = {}
        odd_values: dict[str, Any] = {}
        for name, instance_id in list(self._ready.items()):
            kwargs = self._tools_kwargs.get(name, {}).get("calc_reward_kwargs", {})
            tool_rewards[name], odd = as_reward(await self.tools[name].calc_reward(instance_id, **kwargs))
            if odd is not None:
                odd_values[f"{name}.calc_reward"] = odd
        interaction_score = None
        if self.interaction is not None and self._interaction_id is not None:
            interaction_score, odd = as_reward(await self.interaction.calculate_score(self._interaction_id))
            if odd is not None:
                odd_values["interaction.calculate_score"] = odd
        return EpisodeScores(tool_rewards=tool_rewards, interaction_score=interaction_score, reward_metrics=odd_values)

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
