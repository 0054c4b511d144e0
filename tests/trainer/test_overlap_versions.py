"""Per-token policy versions: a model turn that spans a weight sync (partial rollouts) records both versions on the
right tokens, and each token's logprob is the one its version's weights give; versions survive JSONL and Parquet."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM

from agentgym.episode.episode import EpisodeLimits
from agentgym.models import build_tiny_model, tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.engines import SamplingParams
from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
from agentgym.rollout.engines.weights import read_weights
from agentgym.rollout.policy_version import PolicyVersionGate
from agentgym.rollout.trajectory_io import read_jsonl, read_parquet, write_jsonl, write_parquet
from agentgym.report.viewer import render_html
from agentgym.trajectory import NOT_SAMPLED, Trajectory

ROW = {"prompt": [{"role": "user", "content": "Count with me: one two three"}]}
CHUNK = 4


def _engine_config() -> PagedEngineConfig:
    return PagedEngineConfig(device="cpu", dtype="float32", block_size=4, max_batch_size=4, max_model_len=256,
                             num_blocks=200, intra_op_threads=1)


def _loop(engine, gate, *, chunk: int | None) -> AgentLoop:
    config = AgentLoopConfig(limits=EpisodeLimits(max_assistant_turns=1, max_user_turns=0),
                             sampling=SamplingParams(max_new_tokens=12, temperature=1.0, seed=7),
                             max_response_tokens=12, partial_rollout_tokens=chunk)
    return AgentLoop(engine, tiny_tokenizer(), {}, config=config, gate=gate)


def _logprobs(model, prompt: list[int], output: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + output])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1: -1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(output).unsqueeze(1)).squeeze(1)


async def _until_in_flight(gate: PolicyVersionGate) -> None:
    while gate.in_flight == 0:
        await asyncio.sleep(0)


async def test_a_turn_spanning_a_weight_sync_records_both_versions_on_the_right_tokens(tiny_model_dir, tmp_path):
    new_dir = build_tiny_model(tmp_path, size="tiny", seed=1)  # the "updated" policy: other weights, same shapes
    gate = PolicyVersionGate()
    async with PagedEngine(tiny_model_dir, _engine_config()) as engine:
        loop = _loop(engine, gate, chunk=CHUNK)
        episode = asyncio.ensure_future(loop.run(ROW, group_id="g", uid="g-0"))
        await _until_in_flight(gate)  # the turn's first chunk is running under version 0
        async with gate.weight_sync(1):
            assert gate.in_flight == 0, "the sync starts once the running chunk has finished"
            await engine.update_weights(read_weights(new_dir))
        traj = await episode
    assert traj.error is None, traj.error
    trained = [i for i, m in enumerate(traj.loss_mask) if m]
    assert len(trained) > CHUNK, "the tiny model ended its turn inside the first chunk; pick another seed"
    assert [traj.token_versions[i] for i in trained] == [0] * CHUNK + [1] * (len(trained) - CHUNK)
    assert all(traj.token_versions[i] == NOT_SAMPLED for i, m in enumerate(traj.loss_mask) if not m)
    assert len(traj.turns) == 1 and traj.turns[0].role == "assistant", "the chunks make one turn"
    # Each token's logprob is its own version's: the old weights for the first chunk, the new for the rest.
    old = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    new = AutoModelForCausalLM.from_pretrained(new_dir).eval()
    ids = [traj.response_ids[i] for i in trained]
    engine_lp = torch.tensor([traj.rollout_logprobs[i] for i in trained])
    assert torch.allclose(engine_lp[:CHUNK], _logprobs(old, traj.prompt_ids, ids)[:CHUNK], atol=1e-4)
    assert torch.allclose(engine_lp[CHUNK:], _logprobs(new, traj.prompt_ids, ids)[CHUNK:], atol=1e-4)
    assert not torch.allclose(engine_lp[CHUNK:], _logprobs(old, traj.prompt_ids, ids)[CHUNK:], atol=1e-3)
    assert gate.version == 1 and gate.syncs == 1


async def test_without_partial_rollouts_the_turn_finishes_on_the_weights_it_started_with(tiny_model_dir, tmp_path):
    """One engine call per turn: the sync waits for the whole turn, which keeps version 0 throughout."""
    new_dir = build_tiny_model(tmp_path, size="tiny", seed=1)
    gate = PolicyVersionGate()
    async with PagedEngine(tiny_model_dir, _engine_config()) as engine:
        loop = _loop(engine, gate, chunk=None)
        episode = asyncio.ensure_future(loop.run(ROW, group_id="g", uid="g-0"))
        await _until_in_flight(gate)
        async with gate.weight_sync(1):
            await engine.update_weights(read_weights(new_dir))
        traj = await episode
        after = await loop.run(ROW, group_id="h", uid="h-0")
    assert set(traj.sampled_versions) == {0} and len(traj.sampled_versions) > CHUNK
    assert set(after.sampled_versions) == {1}, "an episode started after the sync samples from version 1"


def _versioned() -> Trajectory:
    return Trajectory(uid="a-0", group_id="a", prompt_ids=[2, 3], response_ids=[5, 6, 7, 8, 9],
                      loss_mask=[1, 1, 0, 1, 1], rollout_logprobs=[-1.0, -0.5, 0.0, -0.2, -0.1],
                      token_versions=[3, 3, NOT_SAMPLED, 4, 4], messages=[{"role": "user", "content": "x"}])


def test_token_versions_round_trip_through_jsonl_and_parquet(tmp_path):
    traj = _versioned()
    write_jsonl([traj], tmp_path / "t.jsonl")
    write_parquet([traj], tmp_path / "t.parquet")
    assert read_jsonl(tmp_path / "t.jsonl")[0].token_versions == [3, 3, NOT_SAMPLED, 4, 4]
    assert read_parquet(tmp_path / "t.parquet")[0].token_versions == [3, 3, NOT_SAMPLED, 4, 4]
    old = traj.to_dict()
    del old["token_versions"]  # a file written before versions existed
    assert Trajectory.from_dict(old).token_versions == []


def test_token_versions_must_cover_every_response_token():
    traj = _versioned()
    traj.token_versions = [3, 3]
    with pytest.raises(ValueError, match="token_versions"):
        traj.check()


def test_the_viewer_shows_the_versions_of_a_trajectory_and_of_its_token_spans():
    page = render_html([("step 5", [_versioned()])], tiny_tokenizer())
    assert "policy versions 3, 4" in page
    assert "policy version 3" in page and "policy version 4" in page


async def test_a_sync_waits_for_generations_and_a_failed_one_keeps_the_old_version():
    gate = PolicyVersionGate(version=2)
    with pytest.raises(ValueError, match="older"):
        async with gate.weight_sync(1):
            pass
    with pytest.raises(RuntimeError, match="broadcast failed"):
        async with gate.weight_sync(3):
            raise RuntimeError("broadcast failed")
    assert gate.version == 2
    async with gate.generation() as version:
        assert version == 2
