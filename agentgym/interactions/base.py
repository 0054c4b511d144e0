"""The interaction (simulated user) interface. Signatures match verl's `BaseInteraction`."""

from __future__ import annotations

from typing import Any, Optional
from uuid import uuid4


class BaseInteraction:
    """Speaks for the user between assistant turns: feedback, follow-ups, and when to stop.

    A row picks its interaction with `extra_info.interaction_kwargs.name`; the row's other `interaction_kwargs`
    go to `start_interaction`. Lifecycle in one episode:

    1. `start_interaction(instance_id, **interaction_kwargs)`: before the model's first turn.
    2. `generate_response(instance_id, messages)`: after each assistant turn that makes no tool call (a turn with
       calls gets the tool results instead), at most `multi_turn.max_user_turns` times.
    3. `calculate_score(instance_id)`: once, when the episode ends.
    4. `finalize_interaction(instance_id)`: always, last.

    Rewards: `calculate_score` is the interaction's part of the trajectory's reward, added to the tools' step and
    `calc_reward` rewards. The per-turn rewards `generate_response` returns are recorded
    (`Trajectory.interaction_rewards`) but not added: summarise them in `calculate_score` (e.g. the best turn's).
    """

    def __init__(self, config: dict[str, Any]):
        """`config` is the YAML entry's `config` mapping, with the entry's `name` added under `name`."""
        self.config = config or {}
        self.name: str = self.config.get("name", "interaction_agent")

    async def start_interaction(self, instance_id: Optional[str] = None, **kwargs: Any) -> str:
        """Set up one episode's state from the row's `interaction_kwargs` (without `name`), e.g. `ground_truth`.
        Returns the instance id (return the one given); later methods receive it."""
        return instance_id or str(uuid4())

    async def generate_response(
        self, instance_id: str, messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[bool, str, float, dict[str, Any]]:
        """The user's reply to the conversation so far (`messages`: the prompt and every turn since, the model's
        last answer at the end).

        Returns `(should_terminate, response, turn_reward, metrics)`: `should_terminate` ends the episode (the
        reply is still appended); otherwise `response` becomes the next user message and the model answers again.
        `turn_reward` is recorded per turn, not added to the reward. `metrics` is not recorded.
        """
        return True, "Your current result seems acceptable.", 0.8, {}

    async def calculate_score(self, instance_id: str, **kwargs: Any) -> float:
        """The episode's outcome score, once at the end; added to the trajectory's reward."""
        return 0.0

    async def finalize_interaction(self, instance_id: str, **kwargs: Any) -> None:
        """Drop the instance's state. Runs at the end of every started episode, also after errors."""
        return None
