"""The control flow of one multi-turn episode, written once for every kind of policy.

generate an assistant turn -> parse tool calls -> run them concurrently -> (no calls) ask the interaction for
a user turn -> append -> repeat, until the interaction ends it, a turn limit is hit, or the policy runs out of
room. What "generate" and "append" mean is the `TurnSource`'s business: text for scripted policies and chat
APIs, token ids with loss masks for training (`agentgym.rollout.agent_loop`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, Protocol

from agentgym.episode.session import EpisodeScores, Session, ToolResult
from agentgym.parsers.base import ParseError, ParseResult, ToolCallParser
from agentgym.storable_text import storable_text

if TYPE_CHECKING:
    from agentgym.episode.environment import EpisodeSession

Message = dict[str, Any]
TruncateSide = Literal["left", "right", "middle"]


@dataclass(frozen=True)
class EpisodeLimits:
    max_assistant_turns: int = 8
    max_user_turns: int = 4
    max_tool_response_chars: int | None = None
    tool_response_truncate_side: TruncateSide = "middle"


@dataclass
class AssistantTurn:
    """`finish_reason` is "stop" when the turn ended normally; anything else ("length", "abort") ends the episode."""

    text: str
    finish_reason: str = "stop"


class TurnSource(Protocol):
    async def assistant_turn(self, messages: list[Message]) -> AssistantTurn: ...

    async def environment_turn(self, messages: list[Message], new: list[Message]) -> bool:
        """Add the environment's turns before the next assistant turn; False when there is no room left."""
        ...


@dataclass
class Episode:
    messages: list[Message]
    scores: EpisodeScores
    tool_results: list[ToolResult] = field(default_factory=list)
    parse_errors: int = 0
    parse_failures: list[ParseError] = field(default_factory=list)  # the call attempts the parser could not read
    turn_rewards: list[float] = field(default_factory=list)
    # the 0-based assistant turn whose output earned each tool result / interaction turn reward (turn-level credit)
    tool_result_turns: list[int] = field(default_factory=list)
    turn_reward_turns: list[int] = field(default_factory=list)
    assistant_turns: int = 0
    user_turns: int = 0
    finish_reason: str = "stop"

    @property
    def reward(self) -> float:
        return self.scores.total + sum(r.reward for r in self.tool_results)


def truncate(text: str, limit: int | None, side: TruncateSide = "middle") -> str:
    """Cut `text` to about `limit` characters with a visible marker saying how much was dropped."""
    if limit is None or len(text) <= limit:
        return text
    dropped = len(text) - limit
    marker = f"...[truncated {dropped} chars]..."
    if side == "left":
        return marker + text[-limit:]
    if side == "right":
        return text[:limit] + marker
    head = limit // 2
    return text[:head] + marker + text[len(text) - (limit - head):]


def assistant_message(parsed: ParseResult, raw_text: str | None = None) -> Message:
    """An OpenAI-style assistant message; arguments stay JSON strings, as chat templates expect.

    A turn with a call that could not be parsed also keeps the model's whole text under `raw_content`: `content`
    and `tool_calls` hold only what parsed, so without it the transcript would not show what the model wrote.
    """
    message: Message = {"role": "assistant", "content": parsed.content}
    if parsed.errors and raw_text is not None:
        message["raw_content"] = raw_text
    if parsed.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in parsed.calls
        ]
    return message


def tool_messages(parsed: ParseResult, results: list[ToolResult], limits: EpisodeLimits) -> list[Message]:
    """One tool message per call attempt, in the order the model wrote them (parse errors included)."""
    replies = [
        (call.index, {"role": "tool", "tool_call_id": r.call_id, "name": r.name, "content": r.text})
        for call, r in zip(parsed.calls, results)
    ]
    replies += [(error.index, {"role": "tool", "content": error.message}) for error in parsed.errors]
    replies.sort(key=lambda pair: pair[0])
    for _, message in replies:
        # A tool may echo the model's own unencodable text (a lone surrogate); the tokenizer needs real text.
        content = storable_text(message["content"])
        message["content"] = truncate(content, limits.max_tool_response_chars, limits.tool_response_truncate_side)
    for call, r in zip(parsed.calls, results):
        if r.response.image:  # verl's ToolResponse.image: image parts before the text, payload under `image`
            message = next(m for _, m in replies if m.get("tool_call_id") == r.call_id and m.get("name") == r.name)
            message["content"] = [{"type": "image", "image": image} for image in r.response.image] + (
                [{"type": "text", "text": message["content"]}] if message["content"] else [])
    return [message for _, message in replies]


async def run_episode(
    session: "Session | EpisodeSession", source: TurnSource, parser: ToolCallParser, prompt: list[Message],
    limits: EpisodeLimits | None = None,
) -> Episode:
    limits = limits or EpisodeLimits()
    messages = [dict(m) for m in prompt]
    episode = Episode(messages=messages, scores=EpisodeScores({}, None))
    finish = "max_assistant_turns"
    while episode.assistant_turns < limits.max_assistant_turns:
        turn = await source.assistant_turn(messages)
        episode.assistant_turns += 1
        parsed = parser.parse(turn.text)
        messages.append(assistant_message(parsed, turn.text))
        if turn.finish_reason != "stop":
            finish = turn.finish_reason
            break
        if parsed.has_call_attempts:
            results = await session.run_calls(parsed.calls)
            episode.tool_results.extend(results)
            episode.tool_result_turns.extend([episode.assistant_turns - 1] * len(results))
            episode.parse_errors += len(parsed.errors)
            episode.parse_failures.extend(parsed.errors)
            new = tool_messages(parsed, results, limits)
        else:
            if episode.user_turns >= limits.max_user_turns:
                finish = "max_user_turns"
                break
            user = await session.user_turn(messages)
            if user is None:
                finish = "stop"
                break
            episode.user_turns += 1
            episode.turn_rewards.append(user.reward)
            episode.turn_reward_turns.append(episode.assistant_turns - 1)
            new = [{"role": "user", "content": storable_text(user.content)}]
            if user.should_terminate:
                messages.extend(new)
                finish = "interaction_done"
                break
        if episode.assistant_turns >= limits.max_assistant_turns:
            messages.extend(new)
            break
        if not await source.environment_turn(messages, new):
            messages.extend(new)
            finish = "length"
            break
        messages.extend(new)
    episode.finish_reason = finish
    episode.scores = await session.scores()
    return episode


TextPolicy = Callable[[list[Message]], Awaitable[str]]


class TextTurnSource:
    """A policy that maps the conversation to assistant text: scripted policies, chat APIs."""

    def __init__(self, policy: TextPolicy):
        self.policy = policy

    async def assistant_turn(self, messages: list[Message]) -> AssistantTurn:
        return AssistantTurn(await self.policy(messages))

    async def environment_turn(self, messages: list[Message], new: list[Message]) -> bool:
        return True
