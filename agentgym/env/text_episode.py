"""Running one episode in text space: a policy that maps messages to assistant text, a parser, and a Session.

This is the loop for policies that are not token engines: scripted policies (demos, tests) and chat APIs.
The token-exact loop for training is `agentgym.rollout.agent_loop`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from agentgym.env.session import EpisodeScores, Session, ToolResult

TextPolicy = Callable[[list[dict[str, Any]]], Awaitable[str]]


@dataclass
class TextEpisode:
    messages: list[dict[str, Any]]
    scores: EpisodeScores
    tool_results: list[ToolResult] = field(default_factory=list)
    turn_rewards: list[float] = field(default_factory=list)
    assistant_turns: int = 0
    finish_reason: str = "stop"

    @property
    def reward(self) -> float:
        return self.scores.total + sum(r.reward for r in self.tool_results)


def assistant_message(content: str, calls: list[Any]) -> dict[str, Any]:
    """An OpenAI-style assistant message; tool calls keep their arguments as a JSON string, as chat templates expect."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
            for call in calls
        ]
    return message


def tool_message(result: ToolResult) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": result.call_id, "name": result.name, "content": result.text}


async def run_text_episode(
    session: Session,
    policy: TextPolicy,
    parser: Any,
    prompt: list[dict[str, Any]],
    *,
    max_assistant_turns: int = 8,
    max_user_turns: int = 4,
) -> TextEpisode:
    """Generate, run tool calls, ask the interaction for a user turn, repeat until someone stops."""
    messages = [dict(m) for m in prompt]
    tool_results: list[ToolResult] = []
    turn_rewards: list[float] = []
    assistant_turns = user_turns = 0
    finish_reason = "max_assistant_turns"
    while assistant_turns < max_assistant_turns:
        parsed = parser.parse(await policy(messages))
        assistant_turns += 1
        messages.append(assistant_message(parsed.content, parsed.calls))
        if parsed.calls or parsed.errors:
            results = await session.run_calls(parsed.calls)
            tool_results.extend(results)
            replies = [(call.index, tool_message(r)) for call, r in zip(parsed.calls, results)]
            replies += [(error.index, {"role": "tool", "content": error.message}) for error in parsed.errors]
            messages.extend(reply for _, reply in sorted(replies, key=lambda pair: pair[0]))
            continue
        if user_turns >= max_user_turns:
            finish_reason = "max_user_turns"
            break
        turn = await session.user_turn(messages)
        if turn is None:
            finish_reason = "stop"
            break
        user_turns += 1
        turn_rewards.append(turn.reward)
        messages.append({"role": "user", "content": turn.content})
        if turn.should_terminate:
            finish_reason = "interaction_done"
            break
    return TextEpisode(
        messages=messages,
        scores=await session.scores(),
        tool_results=tool_results,
        turn_rewards=turn_rewards,
        assistant_turns=assistant_turns,
        finish_reason=finish_reason,
    )
