"""The rollout summary counts every call that did not run as the model meant, by kind: an unreadable call, an
unknown tool and arguments that break the schema are tool errors too (they once showed as "tool errors 0")."""

from __future__ import annotations

import asyncio

from rich.console import Console

from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.episode.episode import EpisodeLimits
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.cli.rollout import summarize, tool_errors_by_kind
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows

REPLIES = [
    '<tool_call>{"name": "calculator", "arguments": {"expression": "1+"</tool_call>',  # not JSON
    '<tool_call>{"name": "abacus", "arguments": {"expression": "1+1"}}</tool_call>',  # no such tool
    '<tool_call>{"name": "calculator", "arguments": {"expr": "1+1"}}</tool_call>',  # schema: expression missing
    '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>',  # fine
    "\\boxed{0}",
]


def _script():
    turns: dict[str, int] = {}

    def script(_: str, session_id: str | None) -> str:
        index = turns.get(session_id, 0)
        turns[session_id] = index + 1
        return REPLIES[min(index, len(REPLIES) - 1)]

    return script


def test_unparseable_unknown_and_invalid_calls_are_counted_by_kind():
    tokenizer = tiny_tokenizer()
    rows = make_rows(ArithmeticTaskConfig(num_rows=2, seed=1))
    config = AgentLoopConfig(limits=EpisodeLimits(max_assistant_turns=len(REPLIES)))
    loop = AgentLoop(ScriptedEngine(tokenizer, _script()), tokenizer, build_tools(load_tool_specs(TOOL_CONFIG)),
                     load_interactions(INTERACTION_CONFIG), config)
    trajectories = asyncio.run(loop.run_batch(rows))
    assert not any(t.failed for t in trajectories)
    assert tool_errors_by_kind(trajectories) == {"parse_error": 2, "unknown_tool": 2, "invalid_arguments": 2}
    assert all(t.num_tool_calls == 4 for t in trajectories)

    console = Console(width=200, record=True)
    console.print(summarize(trajectories))
    text = console.export_text()
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in text.splitlines() if line.count("│") == 3}
    assert lines["tool errors"] == "6"
    assert lines["tool errors: parse_error"] == "2" and lines["tool errors: unknown_tool"] == "2"
    assert lines["tool errors: invalid_arguments"] == "2"
