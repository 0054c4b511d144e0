"""One finished multi-turn episode in token space: what the agent loop emits and the trainer consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# `Trajectory.token_versions` of a token no policy sampled (tool and user turns, template tokens).
NOT_SAMPLED = -1


@dataclass
class TurnSpan:
    """Where one turn's tokens sit inside `response_ids` (half-open `[start, end)`).

    `role` is `assistant` for model tokens (loss_mask 1) and `tool` or `user` for tokens the
    environment appended (loss_mask 0).
    """

    role: str
    start: int
    end: int


@dataclass
class ImageSpan:
    """Where one image's pad tokens sit in `prompt_ids + response_ids` (half-open), which image it is (an index
    into `Trajectory.images`) and which turn holds it (an index into `turns`; None for the prompt)."""

    image: int
    start: int
    end: int
    turn: int | None = None


@dataclass
class Trajectory:
    """Token-exact record of an episode.

    Invariants: `len(response_ids) == len(loss_mask) == len(rollout_logprobs)`; tokens with
    loss_mask 1 are exactly the ids the engine produced; logprobs of masked-out tokens are 0.0.
    `group_id` ties together the samples drawn for one prompt (GRPO groups).
    """

    uid: str
    group_id: str
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    rollout_logprobs: list[float] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    turns: list[TurnSpan] = field(default_factory=list)
    tool_rewards: list[float] = field(default_factory=list)
    interaction_rewards: list[float] = field(default_factory=list)
    # Which assistant turn (0-based, counting the episode's assistant turns) earned each tool / interaction reward:
    # turn-level credit assignment puts the reward on that turn's last model token.
    tool_reward_turns: list[int] = field(default_factory=list)
    interaction_reward_turns: list[int] = field(default_factory=list)
    final_score: float = 0.0
    tool_metrics: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    error: str | None = None
    num_tool_calls: int = 0
    extra_info: dict[str, Any] = field(default_factory=dict)
    # The row's other top-level columns (verl's data_source, reward_model, ability, ...): what rewards score against.
    row_info: dict[str, Any] = field(default_factory=dict)
    # Vision-language episodes: every image the model saw, in order (PNG data URLs), and where its tokens sit.
    # Messages refer to them as {"type": "image", "image_index": k}.
    images: list[str] = field(default_factory=list)
    image_spans: list[ImageSpan] = field(default_factory=list)
    # Per response token, the policy version that sampled it (0: the run's initial weights, k: after the k-th
    # update; NOT_SAMPLED for tokens no policy sampled). Empty when the rollout did not record versions. An
    # episode that spans a weight sync (overlapped rollouts, trainer.rollout_mode) holds several versions.
    token_versions: list[int] = field(default_factory=list)

    @property
    def reward(self) -> float:
        """The scalar the trainer optimises: the outcome score plus the per-step tool rewards.

        Per-turn interaction rewards are kept for turn-level credit and inspection but not added: the
        interaction's `calculate_score` (inside `final_score`) already summarises them, as in verl.
        """
        return float(self.final_score + sum(self.tool_rewards))

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def sampled_versions(self) -> list[int]:
        """The versions of the tokens a policy sampled (the ones the staleness of the trajectory counts)."""
        return [v for v in self.token_versions if v != NOT_SAMPLED]

    def check(self) -> None:
        """Raise ValueError naming the broken invariant; cheap enough to run on every trajectory."""
        n = len(self.response_ids)
        if len(self.loss_mask) != n or len(self.rollout_logprobs) != n:
            raise ValueError(
                f"trajectory {self.uid}: response_ids ({n}), loss_mask ({len(self.loss_mask)}) and "
                f"rollout_logprobs ({len(self.rollout_logprobs)}) must have the same length"
            )
        if self.token_versions and len(self.token_versions) != n:
            raise ValueError(f"trajectory {self.uid}: token_versions ({len(self.token_versions)}) must be empty or "
                             f"hold one version per response token ({n})")
        for span in self.turns:
            if not 0 <= span.start <= span.end <= n:
                raise ValueError(f"trajectory {self.uid}: turn {span} lies outside the {n} response tokens")
        total = len(self.prompt_ids) + n
        for image_span in self.image_spans:
            if not (0 <= image_span.start < image_span.end <= total and 0 <= image_span.image < len(self.images)):
                raise ValueError(f"trajectory {self.uid}: {image_span} lies outside the {total} tokens or names an "
                                 f"image it does not hold ({len(self.images)})")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reward"] = self.reward
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trajectory":
        data = dict(data)
        data.pop("reward", None)
        data["turns"] = [span if isinstance(span, TurnSpan) else TurnSpan(**span) for span in data.get("turns", [])]
        data["image_spans"] = [s if isinstance(s, ImageSpan) else ImageSpan(**s) for s in data.get("image_spans") or []]
        data["images"] = list(data.get("images") or [])
        data["token_versions"] = list(data.get("token_versions") or [])  # files written before versions existed
        return cls(**data)
