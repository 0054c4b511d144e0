"""The sandbox-backed environments, end to end against the real (embedded) sandbox server."""

import asyncio
import re

import pytest

from agentgym.episode.session import Session
from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.tools.sandbox_fusion import aclose_http_sessions
from agentgym_envs import code_arith, codegen
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig
from agentgym_envs.arithmetic.solver import ideal_script
from agentgym_envs.codegen.data import CodegenTaskConfig, make_rows

SOLUTIONS = {
    "divisible by": "def solve(xs):\n    return sum(x for x in xs if x % {k} == 0)\n",
    "greater than": "def solve(xs):\n    return sum(1 for x in xs if x > {k})\n",
    "multiplied by": "def solve(xs):\n    return [x * {k} for x in xs]\n",
    "largest element": "def solve(xs):\n    return max(xs) - min(xs) if xs else 0\n",
    "reversed": "def solve(s):\n    return ''.join(s[i:i + {k}][::-1] for i in range(0, len(s), {k}))\n",
}


def solution_for(question: str) -> str:
    k = int((re.findall(r"\d+", question) or ["0"])[0])
    code = next(code for key, code in SOLUTIONS.items() if key in question)
    return code.format(k=k)


async def episode(row, replies):
    interactions = load_interactions(codegen.INTERACTION_CONFIG)
    async with Session({}, extra_info=row["extra_info"], interactions=interactions) as session:
        turns = []
        messages = list(row["prompt"])
        for reply in replies:
            messages.append({"role": "assistant", "content": reply})
            turn = await session.user_turn(messages)
            turns.append(turn)
            messages.append({"role": "user", "content": turn.content})
            if turn.should_terminate:
                break
        score = (await session.scores()).interaction_score
    await aclose_http_sessions()
    return turns, score


def test_codegen_reward_runs_hidden_tests_in_the_sandbox():
    rows = make_rows(CodegenTaskConfig(num_rows=10, seed=1))
    for row in rows:
        question = row["prompt"][1]["content"]
        turns, score = asyncio.run(episode(row, [f"Here:\n```python\n{solution_for(question)}```"]))
        assert turns[0].content == "All 6 tests passed." and score == 1.0, (question, turns[0].content)


def test_codegen_feedback_names_failures_and_scores_partially():
    row = next(
        r for r in make_rows(CodegenTaskConfig(num_rows=100, seed=2))
        if "largest element" in r["prompt"][1]["content"]
        and any(args == [[]] for args, _ in r["extra_info"]["interaction_kwargs"]["tests"])
    )
    wrong = "```python\ndef solve(xs):\n    return max(xs) - min(xs)\n```"  # forgets the empty list
    right = f"```python\n{solution_for(row['prompt'][1]['content'])}```"
    turns, score = asyncio.run(episode(row, [wrong, right]))
    tests = row["extra_info"]["interaction_kwargs"]["tests"]
    empty = sum(1 for args, _ in tests if args == [[]])
    assert turns[0].should_terminate is False
    assert turns[0].content.startswith(f"{len(tests) - empty}/{len(tests)} tests passed.")
    assert "raised ValueError" in turns[0].content
    assert turns[0].reward == pytest.approx((len(tests) - empty) / len(tests))
    assert turns[-1].content == "All 6 tests passed." and score == 1.0


def test_codegen_hostile_or_missing_code_scores_zero():
    row = make_rows(CodegenTaskConfig(num_rows=1, seed=3))[0]
    turns, score = asyncio.run(episode(row, ["I think it works.", "```python\nwhile True:\n    pass\n```"]))
    assert turns[0].content.startswith("No ```python code block found.")
    assert turns[1].should_terminate and turns[1].reward == 0.0 and score == 0.0


def test_code_arith_ideal_policy_solves_tasks_through_the_sandbox():
    tokenizer = tiny_tokenizer()
    rows = code_arith.make_rows(ArithmeticTaskConfig(num_rows=4, seed=4))
    tools = build_tools(load_tool_specs(code_arith.TOOL_CONFIG))
    engine = ScriptedEngine(tokenizer, ideal_script(rows, "ca-", code_arith.code_call))
    loop = AgentLoop(engine, tokenizer, tools, load_interactions(code_arith.INTERACTION_CONFIG))

    async def run():
        try:
            return await loop.run_batch(rows, group_prefix="ca-")
        finally:
            await aclose_http_sessions()

    trajs = asyncio.run(run())
    for traj in trajs:
        assert traj.error is None and traj.final_score == 1.0
        tool_reply = next(m["content"] for m in traj.messages if m["role"] == "tool")
        assert tool_reply.startswith("Exit code: 0") and traj.tool_metrics[0]["outcome"] == "success"
