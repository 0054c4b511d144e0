"""A calculator tool: exact arithmetic the model can call instead of guessing digits."""

from __future__ import annotations

from typing import Any

from agentgym.tools.arithmetic import ExpressionError, evaluate, format_number
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import ToolResponse


class CalculatorTool(BaseTool):
    """Stateless: every call evaluates one expression. Reward per call is `config.call_reward` (default 0)."""

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        expression = str(parameters.get("expression", ""))
        try:
            value = evaluate(expression)
        except ExpressionError as exc:
            return ToolResponse(text=f"Error: {exc}"), 0.0, {"ok": False}
        return ToolResponse(text=format_number(value)), float(self.config.get("call_reward", 0.0)), {"ok": True}
