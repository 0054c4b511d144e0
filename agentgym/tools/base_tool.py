"""The tool interface. Signatures match verl's `BaseTool`, so a verl tool ports by changing its import."""

from __future__ import annotations

from typing import Any, Optional
from uuid import uuid4

from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse


class BaseTool:
    """A stateful tool the model can call.

    One tool object serves many trajectories; per-trajectory state lives under an `instance_id`
    created by `create` and dropped by `release`. The session guarantees `release` runs for every
    instance it created, on success, error and cancellation alike.

    Lifecycle in one episode (the keyword arguments come from the dataset row's
    `extra_info.tools_kwargs.<tool name>`; a row that names no kwargs passes none):

    1. `create(instance_id, **create_kwargs)`: on the tool's first call in the episode (not before: an episode
       that never calls the tool never creates it).
    2. `execute(instance_id, parameters, **execute_kwargs)`: once per call, after the arguments passed the tool's
       JSON Schema; calls of one turn run concurrently.
    3. `calc_reward(instance_id, **calc_reward_kwargs)`: once, when the episode ends, if the instance was created.
    4. `release(instance_id, **release_kwargs)`: always, last.

    Rewards: the trajectory's reward is the sum of every `execute` step reward, every created instance's
    `calc_reward`, and the interaction's `calculate_score` (turn rewards from `generate_response` are recorded,
    not added; see `BaseInteraction`). `custom_reward_function` in the run config replaces that sum.
    """

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None):
        """`config` is the YAML entry's `config` mapping; `tool_schema` its `tool_schema` (what the model sees)."""
        self.config = config or {}
        self.tool_schema = tool_schema or self.get_openai_tool_schema()
        if self.tool_schema is None:
            raise ValueError(
                f"{type(self).__name__} has no tool schema: pass `tool_schema` or override get_openai_tool_schema()."
            )
        self.name = self.tool_schema.function.name

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        """The schema shown to the model (in the prompt's tool list) and used to validate its arguments."""
        return getattr(self, "tool_schema", None)

    @property
    def execute_timeout(self) -> float | None:
        """Seconds the session waits for one `execute` before telling the model the call timed out.

        From the tool YAML's `config: {execute_timeout: N}`; None leaves the session's default
        (`SessionConfig.tool_call_timeout`). A tool that bounds its own calls returns its own bound.
        """
        value = getattr(self, "_execute_timeout", None)
        if value is None and isinstance(self.config, dict):
            value = self.config.get("execute_timeout")
        return None if value is None else float(value)

    @execute_timeout.setter
    def execute_timeout(self, value: float | None) -> None:
        # A ported tool may set it as a plain attribute.
        self._execute_timeout = value

    async def create(self, instance_id: Optional[str] = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        """Set up one episode's state. Called on the tool's first call in the episode with the session's
        `instance_id` and the row's `create_kwargs` (e.g. the table a lookup tool answers from).

        Returns `(instance_id, ToolResponse)`: the id every later method receives (return the one given), and a
        response that is not shown to the model. A bare id (older verl tools) is accepted with a warning.
        An exception here reaches the model as that call's error message; `release` still runs.
        """
        return (instance_id or str(uuid4())), ToolResponse()

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        """Run one call. `parameters` are the model's arguments, already valid against the schema; `kwargs` are
        the row's `execute_kwargs`.

        Returns `(response, step_reward, metrics)`: `response.text` becomes the tool message the model reads next
        (cut to `multi_turn.max_tool_response_length`); `step_reward` is added to the trajectory's reward and kept
        per call in `Trajectory.tool_rewards`; `metrics` is stored with the call in `Trajectory.tool_metrics`.
        An exception or a timeout (`tool_call_timeout`) becomes an error message for the model, not a crash.
        """
        return ToolResponse(text="Updated the tool state."), 0.0, {}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        """The tool's outcome reward, once at the end of an episode in which it was created; `kwargs` are the
        row's `calc_reward_kwargs`. Added to the trajectory's reward (inside `Trajectory.final_score`)."""
        return 0.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        """Drop the instance's state; `kwargs` are the row's `release_kwargs`. Runs for every instance whose
        `create` was attempted, also after errors and cancellation; its exceptions are collected, not raised."""
        return None
