"""A simulated teacher for math tasks: checks the answer, says "wrong, try again", and ends the episode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional
from uuid import uuid4

from agentgym.interactions.base import BaseInteraction
from agentgym.answers.numeric import extract_answer, response_matches, states_a_number


@dataclass
class _Episode:
    ground_truth: str
    attempts: int = 0
    turn_rewards: list[float] = field(default_factory=list)
    solved: bool = False


class MathFeedbackInteraction(BaseInteraction):
    """Gives the model up to `max_attempts` tries; a correct answer on try k earns `decay ** (k-1)`.

    The per-turn reward is returned from `generate_response`; `calculate_score` is the best turn reward,
    so a policy that needs feedback still learns, but less than one that is right first time.
    With `number_only: true` an answer must be a number, not an expression that evaluates to it (arithmetic tasks:
    boxing the question itself would otherwise pass the math-verify check).
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        self.max_attempts = int(self.config.get("max_attempts", 3))
        self.decay = float(self.config.get("decay", 0.5))
        self.number_only = bool(self.config.get("number_only", False))
        self._episodes: dict[str, _Episode] = {}

    async def start_interaction(self, instance_id: Optional[str] = None, ground_truth: Any = None, **kwargs: Any) -> str:
        if ground_truth is None:
            raise ValueError(f"interaction `{self.name}` needs `ground_truth` in the row's extra_info.interaction_kwargs.")
        instance_id = instance_id or str(uuid4())
        self._episodes[instance_id] = _Episode(ground_truth=str(ground_truth))
        return instance_id

    async def generate_response(
        self, instance_id: str, messages: list[dict[str, Any]], **kwargs: Any
    ) -> tuple[bool, str, float, dict[str, Any]]:
        episode = self._episodes[instance_id]
        reply = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "assistant"), "")
        answer = extract_answer(reply)
        episode.attempts += 1
        not_a_number = self.number_only and answer is not None and not states_a_number(answer)
        if not not_a_number and response_matches(reply, episode.ground_truth):
            reward = self.decay ** (episode.attempts - 1)
            episode.solved = True
            episode.turn_rewards.append(reward)
            return True, "Correct!", reward, {"attempts": episode.attempts, "correct": True}
        episode.turn_rewards.append(0.0)
        shown = answer if answer is not None else "no answer"
        verdict = "is not a number" if not_a_number else "is wrong"
        info = {"attempts": episode.attempts, "correct": False} | ({"not_a_number": True} if not_a_number else {})
        if episode.attempts >= self.max_attempts:
            return True, f"Your answer ({shown}) {verdict}. No attempts left.", 0.0, info
        left = self.max_attempts - episode.attempts
        retry = (f"Give the number itself as \\boxed{{...}} ({left} attempt(s) left)." if not_a_number else
                 f"Check your work and try again ({left} attempt(s) left). Give the final answer as \\boxed{{...}}.")
        return False, f"Your answer ({shown}) {verdict}. {retry}", 0.0, info

    async def calculate_score(self, instance_id: str, **kwargs: Any) -> float:
        episode = self._episodes.get(instance_id)
        return max(episode.turn_rewards, default=0.0) if episode else 0.0

    async def finalize_interaction(self, instance_id: str, **kwargs: Any) -> None:
        self._episodes.pop(instance_id, None)
