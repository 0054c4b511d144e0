"""Whole episodes in text space: scripted policies through the real parser, tools, interaction and CLI."""

import subprocess
import sys

from agentgym.episode.session import Session
from agentgym.episode.episode import EpisodeLimits, TextTurnSource, run_episode, truncate
from agentgym.interactions.registry import load_interactions
from agentgym.parsers import get_parser
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG


def scripted(*replies):
    queue = list(replies)

    async def policy(messages):
        return queue.pop(0)

    return policy


async def test_broken_call_is_answered_in_order_and_episode_continues():
    tools = build_tools(load_tool_specs(TOOL_CONFIG))
    interactions = load_interactions(INTERACTION_CONFIG)
    extra = {"interaction_kwargs": {"name": "math_feedback", "ground_truth": "42"}}
    policy = scripted(
        '<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>\n'
        '<tool_call>{"name": "calculator", "arguments": {"expression": }</tool_call>\n'
        '<tool_call>{"name": "calculator", "arguments": {"expr": "1"}}</tool_call>',
        "It is \\boxed{42}.",
    )
    async with Session(tools, extra_info=extra, interactions=interactions) as session:
        episode = await run_episode(session, TextTurnSource(policy), get_parser("hermes"), [{"role": "user", "content": "6*7?"}])
    roles = [m["role"] for m in episode.messages]
    assert roles == ["user", "assistant", "tool", "tool", "tool", "assistant", "user"]
    assert episode.messages[2]["content"] == "42"
    assert episode.messages[3]["content"].startswith("Tool call 2 could not be parsed")
    assert episode.messages[4]["content"].startswith("Error: invalid arguments for tool `calculator`: argument `expression` is required")
    assert episode.finish_reason == "interaction_done" and episode.reward == 1.0
    broken_turn = episode.messages[1]
    assert '{"expression": }' in broken_turn["raw_content"], "what the model wrote stays in the transcript"
    assert broken_turn["raw_content"].count("<tool_call>") == 3 and len(broken_turn["tool_calls"]) == 2
    assert "raw_content" not in episode.messages[5], "a turn that parsed needs no copy"


async def test_turn_limit_stops_a_policy_that_never_answers():
    tools = build_tools(load_tool_specs(TOOL_CONFIG))
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>'
    async with Session(tools) as session:
        episode = await run_episode(
            session, TextTurnSource(scripted(*[call] * 10)), get_parser("hermes"), [], EpisodeLimits(max_assistant_turns=3)
        )
    assert episode.assistant_turns == 3 and episode.finish_reason == "max_assistant_turns"
    assert len(episode.tool_results) == 3


def test_demo_command_prints_transcript_and_reward():
    out = subprocess.run(
        [sys.executable, "-m", "agentgym", "demo", "--episodes", "2"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "calculator" in out.stdout and "Correct!" in out.stdout and "is wrong" in out.stdout
    assert out.stdout.count("reward 0.50") == 2


def test_truncate_marks_what_was_dropped():
    text = "a" * 50 + "b" * 50
    assert truncate(text, 20, "middle") == "a" * 10 + "...[truncated 80 chars]..." + "b" * 10
    assert truncate(text, 20, "right") == "a" * 20 + "...[truncated 80 chars]..."
    assert truncate(text, 20, "left") == "...[truncated 80 chars]..." + "b" * 20
    assert truncate(text, 100) == text and truncate(text, None) == text
