"""verl's own setups run here unchanged: its gsm8k multiturn rows, its YAML layouts, tools and an interaction
written the way verl writes them (ported by import lines only), under the tool-only, interaction-only and
tool + interaction configs. No trajectory may fail."""

from __future__ import annotations

import json

import pytest

from agentgym.episode.session import SessionConfig
from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.rollout.trajectory_io import read_jsonl, read_parquet, write_jsonl
from agentgym.rollout.trajectory_io import write_parquet as write_parquet_trajectories
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.rows import read_rows

from .verl_layout import (
    ANSWER_TOOL_YAML,
    INTERACTION_YAML,
    QUESTIONS,
    final_number,
    install_ported,
    scripted_student,
    tool_call,
    verl_rows,
    write_parquet,
)

CALL = tool_call("calc_gsm8k_reward", {"answer": "{answer}"})


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def verl_setup(tmp_path, monkeypatch):
    """The ported classes on the path, verl's YAML layouts written out, verl's rows through a parquet file."""
    install_ported(tmp_path, monkeypatch)
    (tmp_path / "tools.yaml").write_text(ANSWER_TOOL_YAML)
    (tmp_path / "interaction.yaml").write_text(INTERACTION_YAML)
    rows = read_rows(str(write_parquet(verl_rows(), tmp_path / "train.parquet")))
    return tmp_path, rows


async def run(tokenizer, steps, rows, tools, interactions, lifetime="trajectory"):
    engine = ScriptedEngine(tokenizer, scripted_student(steps))
    config = AgentLoopConfig(session=SessionConfig(tool_instance_lifetime=lifetime))
    return await AgentLoop(engine, tokenizer, tools, interactions, config).run_batch(rows)


def assert_none_failed(trajectories):
    failed = [(t.uid, t.error) for t in trajectories if t.failed]
    assert not failed, failed


async def test_tool_only_config_ignores_the_rows_interaction_kwargs(tokenizer, verl_setup):
    path, rows = verl_setup
    assert all("name" not in r["extra_info"]["interaction_kwargs"] for r in rows)
    tools = build_tools(load_tool_specs(path / "tools.yaml"))
    trajectories = await run(tokenizer, [CALL, CALL, "#### {answer}"], rows, tools, {})
    assert_none_failed(trajectories)
    for traj in trajectories:
        assert traj.finish_reason == "stop"
        assert traj.tool_rewards == [0.0, -0.05], "one instance per episode: the repeat does not improve"
        assert traj.final_score == 1.0, "calc_reward of the episode's instance"
        spans = [m["trace"] for m in traj.tool_metrics]
        assert [s[0]["op"] for s in spans] == ["AnswerCheckTool.execute"] * 2
        assert spans[0][0]["inputs"]["parameters"] == {"answer": traj.extra_info["interaction_kwargs"]["ground_truth"]}
        assert spans[0][0]["duration_s"] >= 0 and spans[0][0]["error"] is None


async def test_interaction_only_config_ignores_the_rows_tools_kwargs_and_picks_the_one_interaction(tokenizer, verl_setup):
    path, rows = verl_setup
    interactions = load_interactions(path / "interaction.yaml")
    assert list(interactions) == ["answerfeedback"], "verl's name rule for a YAML entry without `name`"
    trajectories = await run(tokenizer, ["#### {wrong}", "#### {answer}"], rows, {}, interactions)
    assert_none_failed(trajectories)
    for traj, row in zip(trajectories, rows):
        assert traj.finish_reason == "interaction_done"
        assert [m["role"] for m in traj.messages[2:]] == ["assistant", "user", "assistant", "user"]
        assert traj.interaction_rewards == [0.0, 1.0] and traj.final_score == 1.0
    seen = interactions["answerfeedback"].seen_kwargs
    expected = [r["extra_info"]["interaction_kwargs"] for r in rows for _ in range(2)]
    assert sorted(seen, key=json.dumps) == sorted(expected, key=json.dumps), "generate_response gets the row's kwargs"


async def test_tool_and_interaction_config(tokenizer, verl_setup):
    path, rows = verl_setup
    tools = build_tools(load_tool_specs(path / "tools.yaml"))
    interactions = load_interactions(path / "interaction.yaml")
    note = tool_call("scratchpad", {"note": "subtract at the end"})
    trajectories = await run(tokenizer, [note, CALL, "#### {answer}"], rows, tools, interactions)
    assert_none_failed(trajectories)
    for traj in trajectories:
        assert traj.finish_reason == "interaction_done"
        assert [m["name"] for m in traj.tool_metrics] == ["scratchpad", "calc_gsm8k_reward"]
        assert traj.tool_rewards == [0.0, 0.0], "the scratchpad's None reward scores 0"
        # calc_gsm8k_reward 1.0 + the interaction's 1.0; the scratchpad's list scores 0 and is kept as a metric.
        assert traj.final_score == 2.0
        assert traj.extra_info["reward_metrics"] == {
            "scratchpad.calc_reward": {"type": "list", "value": "['subtract at the end']"}
        }
    assert tools["scratchpad"].config["label"] == "notes", "OmegaConf default of an unset variable"
    write_jsonl(trajectories, path / "t.jsonl")
    write_parquet_trajectories(trajectories, path / "t.parquet")
    again = read_parquet(path / "t.parquet")
    assert [t.tool_metrics for t in again] == [t.tool_metrics for t in read_jsonl(path / "t.jsonl")]
    assert again[0].tool_metrics[0]["trace"][0]["inputs"]["parameters"] == {"note": "subtract at the end"}
    assert tools["calc_gsm8k_reward"]._instance_dict == {} and tools["scratchpad"]._instance_dict == {}


@pytest.mark.parametrize(("lifetime", "step_rewards", "final_score"), [
    ("trajectory", [0.0, -0.05], 1.0),  # verl <= 0.6, SGLang multi-turn rollout
    ("call", [0.0, 0.0], 0.0),  # verl's ToolAgentLoop (0.5 on; the only path from 0.7): no calc_reward
])
async def test_tool_instance_lifetime(tokenizer, verl_setup, lifetime, step_rewards, final_score):
    path, rows = verl_setup
    tools = build_tools(load_tool_specs(path / "tools.yaml"))
    trajectories = await run(tokenizer, [CALL, CALL, "#### {answer}"], rows[:2], tools, {}, lifetime=lifetime)
    assert_none_failed(trajectories)
    assert [t.tool_rewards for t in trajectories] == [step_rewards] * 2
    assert [t.final_score for t in trajectories] == [final_score] * 2
    assert tools["calc_gsm8k_reward"]._instance_dict == {}, "every instance released"


def test_rows_match_verls_layout():
    [row, *_] = verl_rows()
    assert set(row) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert set(row["extra_info"]) == {"split", "index", "answer", "question", "need_tools_kwargs", "tools_kwargs",
                                      "interaction_kwargs"}
    assert set(row["extra_info"]["interaction_kwargs"]) == {"query", "ground_truth"}
    assert row["extra_info"]["tools_kwargs"]["calc_gsm8k_reward"]["create_kwargs"]["ground_truth"] == \
        final_number(QUESTIONS[0][1]) == row["reward_model"]["ground_truth"]
