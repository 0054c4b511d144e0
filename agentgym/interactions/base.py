"""The interaction (simulated user) interface. Signatures match verl's `BaseInteraction`."""

from __future__ import annotations

from typing import Any, Optional
from uuid import uuid4


class BaseInteraction:
    """Speaks for the user between assistant turns: feedback, follow-ups, and when to stop.

    `generate_response` returns `(should_terminate, response_text, turn_reward, metrics)`.
    """

    def __init__(self, config: dict[str, Any]):
        self.config = config or {}
        self.name: str = self.config.get("name", "interaction_agent")

    async def start_interaction(self, instance_id: Optional[str] = None, **kwargs: Any) -> str:
        return instance_id or str(uuid4())

    async def generate_response(
        self, instance_id: str, messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[bool, str, float, dict[str, Any]]:
        return True, "Your current result seems acceptable.", 0.8, {}

    async def calculate_score(self, instance_id: str, **kwargs: Any) -> float:
        return 0.0

    async def finalize_interaction(self, instance_id: str, **kwargs: Any) -> None:
        return None
