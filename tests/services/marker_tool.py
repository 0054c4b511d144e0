"""A tool whose live instances are files: `create` writes `<dir>/<instance_id>`, `release` deletes it, so a test
in another process can see whether the environment server released everything (the leak tests)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agentgym.tools.base_tool import BaseTool
from agentgym.tools.schemas import ToolResponse


class MarkerTool(BaseTool):
    def __init__(self, config: dict, tool_schema: Any):
        super().__init__(config, tool_schema)
        self.dir = Path(self.config["dir"])
        self.dir.mkdir(parents=True, exist_ok=True)

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        assert instance_id is not None
        (self.dir / instance_id).write_text("live")
        return instance_id, ToolResponse()

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        await asyncio.sleep(float(parameters.get("sleep_s", 0.0)))
        return ToolResponse(text=f"echo {parameters['text']}"), 0.5, {"instance": instance_id, "raw": b"\x00\x01"}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        return 1.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        (self.dir / instance_id).unlink(missing_ok=True)
