"""A reward tool: the model submits its final answer, the tool says whether it is right and scores the episode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from uuid import uuid4

from agentgym.answers.numeric import response_matches
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import ToolResponse


@dataclass
class _Attempts:
    ground_truth: str
    submitted: int = 0
    correct: bool = False


class AnswerCheckTool(BaseTool):
    """Per-instance state: the ground truth (from `create_kwargs.ground_truth`) and the submissions so far.

    config: `max_submissions` (default 3); `reveal` whether the reply says right/wrong (default true);
    `correct_reward` (default 1.0) returned by calc_reward when any submission matched.
    """

    def __init__(self, config: dict, tool_schema):
        super().__init__(config, tool_schema)
        self._instances: dict[str, _Attempts] = {}

    async def create(self, instance_id: Optional[str] = None, ground_truth: Any = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        if ground_truth is None:
            raise ValueError(
                f"tool `{self.name}` needs `ground_truth` in extra_info.tools_kwargs.{self.name}.create_kwargs of the row."
            )
        instance_id = instance_id or str(uuid4())
        self._instances[instance_id] = _Attempts(ground_truth=str(ground_truth))
        return instance_id, ToolResponse()

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        state = self._instances[instance_id]
        limit = int(self.config.get("max_submissions", 3))
        if state.correct or state.submitted >= limit:
            return ToolResponse(text=f"No more submissions accepted ({limit} allowed)."), 0.0, {"accepted": False}
        state.submitted += 1
        state.correct = response_matches(str(parameters.get("answer", "")), state.ground_truth)
        if not self.config.get("reveal", True):
            return ToolResponse(text="Answer recorded."), 0.0, {"accepted": True}
        verdict = "Correct." if state.correct else f"Incorrect. {limit - state.submitted} submission(s) left."
        return ToolResponse(text=verdict), 0.0, {"accepted": True, "correct": state.correct}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        state = self._instances.get(instance_id)
        return float(self.config.get("correct_reward", 1.0)) if state and state.correct else 0.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._instances.pop(instance_id, None)
