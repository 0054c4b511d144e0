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
    """

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None):
        self.config = config or {}
        self.tool_schema = tool_schema or self.get_openai_tool_schema()
        if self.tool_schema is None:
            raise ValueError(
                f"{type(self).__name__} has no tool schema: pass `tool_schema` or override get_openai_tool_schema()."
            )
        self.name = self.tool_schema.function.name

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
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
        return (instance_id or str(uuid4())), ToolResponse()

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        return ToolResponse(text="Updated the tool state."), 0.0, {}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        return 0.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        return None
