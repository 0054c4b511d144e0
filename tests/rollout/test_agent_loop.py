"""The agent loop's token bookkeeping, with an engine whose replies the test controls and the real tokenizer."""

import json
import random
import re

import pytest

from agentgym.episode.episode import EpisodeLimits
from agentgym.interactions.registry import load_interactions
from agentgym.models import chat_text, tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.rollout.trajectory_io import read_jsonl, read_parquet, write_jsonl, write_parquet
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def solver(conversation: str, session_id: str) -> str:
    """Calls the calculator on the task's numbers, then answers with what the tool said."""
    if "boom" in conversation:
        raise RuntimeError("engine exploded")
    results = re.findall(r"<tool_response>\s*(.*?)\s*</tool_response>", conversation, re.S)
    if results:
        return f"The result is \\boxed{{{results[-1]}}}."
    a, b, c = re.findall(r"\d+", conversation.split("<|im_start|>user")[-1])[:3]
    call = {"name": "calculator", "arguments": {"expression": f"{a}*{b}-{c}"}}
    return f"I will compute it.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"


class Recorder(ScriptedEngine):
    """Remembers every id list it returned, per session, to compare with what the trajectory trains on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.returned: dict[str, list[list[int]]] = {}

    async def generate(self, prompt_ids, sampling, *, session_id=None):
        out = await super().generate(prompt_ids, sampling, session_id=session_id)
        self.returned.setdefault(session_id, []).append(list(out.token_ids))
        return out


def rows(n=4):
    """Arithmetic rows whose question is always "a times b minus c", the shape the scripted solver reads."""
    rng = random.Random(3)
    data = make_rows(ArithmeticTaskConfig(num_rows=n, seed=3))
    for row in data:
        a, b, c = rng.randint(100, 999), rng.randint(10, 99), rng.randint(100, 999)
        row["prompt"][1]["content"] = f"Compute {a} times {b} minus {c}."
        row["extra_info"]["interaction_kwargs"]["ground_truth"] = str(a * b - c)
    return data


def make_loop(tokenizer, engine, **overrides):
    tools = build_tools(load_tool_specs(TOOL_CONFIG))
    interactions = load_interactions(INTERACTION_CONFIG)
    return AgentLoop(engine, tokenizer, tools, interactions, AgentLoopConfig(**overrides))


async def test_trajectory_is_token_exact_and_decodes_to_the_conversation(tokenizer):
    engine = Recorder(tokenizer, solver)
    loop = make_loop(tokenizer, engine)
    [traj] = await loop.run_batch(rows(1))
    assert traj.error is None, traj.error
    assert traj.finish_reason == "interaction_done" and traj.final_score == 1.0
    assert [m["role"] for m in traj.messages] == ["system", "user", "assistant", "tool", "assistant", "user"]
    trained = [tok for tok, m in zip(traj.response_ids, traj.loss_mask) if m == 1]
    assert trained == [tok for out in engine.returned[traj.uid] for tok in out], "trained tokens are the engine's tokens"
    assert [span.role for span in traj.turns] == ["assistant", "tool", "assistant"]
    for span in traj.turns:
        assert set(traj.loss_mask[span.start:span.end]) == {1 if span.role == "assistant" else 0}
    assert all(lp == -0.25 for lp, m in zip(traj.rollout_logprobs, traj.loss_mask) if m) and not any(
        lp for lp, m in zip(traj.rollout_logprobs, traj.loss_mask) if not m
    )
    # The ids decode to exactly what the chat template renders for the recorded conversation (up to the last
    # assistant turn: the final user message is not part of the token sequence).
    rendered = chat_text(tokenizer, traj.messages[:-1], loop.tool_dicts)
    decoded = tokenizer.decode(traj.prompt_ids + traj.response_ids, skip_special_tokens=False)
    assert rendered.startswith(decoded) and rendered[len(decoded):] == "\n"


async def test_prompt_without_tool_schemas_still_runs_the_tools(tokenizer):
    with_schemas = await make_loop(tokenizer, ScriptedEngine(tokenizer, solver)).run_batch(rows(1))
    loop = make_loop(tokenizer, ScriptedEngine(tokenizer, solver), tool_schemas_in_prompt=False)
    [traj] = await loop.run_batch(rows(1))
    assert traj.final_score == 1.0 and traj.num_tool_calls == 1
    prompt = tokenizer.decode(traj.prompt_ids)
    assert "<tools>" not in prompt and "<tools>" in tokenizer.decode(with_schemas[0].prompt_ids)
    assert len(traj.prompt_ids) < len(with_schemas[0].prompt_ids) // 2
    assert traj.response_ids == with_schemas[0].response_ids
    assert tokenizer.decode(traj.prompt_ids + traj.response_ids, skip_special_tokens=False) == chat_text(
        tokenizer, traj.messages[:-1], None
    )[:-1]


async def test_batch_keeps_going_when_one_episode_fails(tokenizer):
    data = rows(3)
    data[1]["prompt"][1]["content"] = "boom"
    loop = make_loop(tokenizer, ScriptedEngine(tokenizer, solver))
    trajs = await loop.run_batch(data, n=2)
    assert [t.failed for t in trajs] == [False, False, True, True, False, False]
    assert trajs[2].error == "RuntimeError: engine exploded" and trajs[2].finish_reason == "failed"
    assert trajs[0].group_id == trajs[1].group_id != trajs[2].group_id


async def test_response_budget_ends_the_episode(tokenizer):
    loop = make_loop(tokenizer, ScriptedEngine(tokenizer, solver), max_response_tokens=30)
    [traj] = await loop.run_batch(rows(1))
    assert traj.finish_reason == "length" and len(traj.response_ids) <= 30


async def test_long_tool_output_is_truncated_with_marker(tokenizer):
    limits = EpisodeLimits(max_tool_response_chars=2)
    loop = make_loop(tokenizer, ScriptedEngine(tokenizer, solver), limits=limits)
    [traj] = await loop.run_batch(rows(1))
    tool_text = next(m["content"] for m in traj.messages if m["role"] == "tool")
    assert re.fullmatch(r"\d\.\.\.\[truncated \d chars\]\.\.\.\d", tool_text), tool_text
    span = next(s for s in traj.turns if s.role == "tool")
    assert tool_text in tokenizer.decode(traj.response_ids[span.start:span.end])


async def test_engine_timeout_marks_trajectory_failed(tokenizer):
    engine = ScriptedEngine(tokenizer, solver, delay_s=2.0)
    loop = make_loop(tokenizer, engine, generate_timeout_s=0.1)
    [traj] = await loop.run_batch(rows(1))
    assert traj.failed and traj.error == "engine did not answer in time"


async def test_trajectories_round_trip_through_jsonl_and_parquet(tokenizer, tmp_path):
    loop = make_loop(tokenizer, ScriptedEngine(tokenizer, solver))
    trajs = await loop.run_batch(rows(3))
    write_jsonl(trajs, tmp_path / "t.jsonl")
    write_parquet(trajs, tmp_path / "t.parquet")
    for loaded in (read_jsonl(tmp_path / "t.jsonl"), read_parquet(tmp_path / "t.parquet")):
        assert [t.to_dict() for t in loaded] == [t.to_dict() for t in trajs]


async def test_lone_surrogate_the_model_wrote_does_not_stop_the_episode_or_its_saving(tokenizer, tmp_path):
    """`\\ud800` (plain ASCII) in the call's JSON decodes to a lone surrogate: the tool's echo of it must still
    tokenize, and the trajectory must still be written."""

    def writes_a_lone_surrogate(conversation: str, session_id: str) -> str:
        if "<tool_response>" in conversation:
            return "Sorry, \\boxed{0}."
        return '<tool_call>\n{"name": "calc\\ud800", "arguments": {"expression": "1\\udfff"}}\n</tool_call>'

    loop = make_loop(tokenizer, ScriptedEngine(tokenizer, writes_a_lone_surrogate))
    [traj] = await loop.run_batch(rows(1))
    assert traj.error is None, traj.error
    tool_text = next(m["content"] for m in traj.messages if m["role"] == "tool")
    assert "unknown tool `calc\\ud800`" in tool_text
    write_jsonl([traj], tmp_path / "t.jsonl")
    write_parquet([traj], tmp_path / "t.parquet")
    assert read_jsonl(tmp_path / "t.jsonl")[0].messages == traj.messages
