"""The ideal arithmetic policy that writes the main job's warm-up demonstrations, tool calls and answers from memory."""

import asyncio

from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows
from agentgym_envs.arithmetic.solver import ideal_script


def test_direct_rows_answer_without_the_tool_and_the_rest_call_it():
    tokenizer = tiny_tokenizer()
    rows = make_rows(ArithmeticTaskConfig(num_rows=4, seed=5, min_digits=1, max_digits=2))
    script = ideal_script(rows, "s-", direct_rows={1, 3})
    loop = AgentLoop(ScriptedEngine(tokenizer, script), tokenizer, build_tools(load_tool_specs(TOOL_CONFIG)),
                     load_interactions(INTERACTION_CONFIG))
    trajs = asyncio.run(loop.run_batch(rows, group_prefix="s-"))
    assert [t.final_score for t in trajs] == [1.0] * 4
    assert [t.num_tool_calls for t in trajs] == [1, 0, 1, 0]
    for row, traj in zip(rows, trajs):
        truth = row["reward_model"]["ground_truth"]
        assert traj.messages[-2]["role"] == "assistant" and traj.messages[-2]["content"] == f"\\boxed{{{truth}}}"
    assert trajs[0].messages[2]["tool_calls"][0]["function"]["arguments"] == (
        '{"expression": "' + rows[0]["extra_info"]["expression"] + '"}'
    )
