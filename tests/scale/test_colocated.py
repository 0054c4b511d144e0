"""The colocated hybrid engine on a two-node Ray cluster: 4 trainer ranks over both nodes, an engine replica in every
rank, 3 GRPO steps of a tool-using task. Every replica generates, ranks are numbered node by node, and after every
step every replica's weights equal the trainer's full parameters bit for bit (synced inside each rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentgym.rollout.trajectory_io import read_jsonl

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_colocated_replicas_on_two_nodes(tiny_model_dir, tmp_path):
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(HERE / "colocated_run.py"), str(tiny_model_dir), str(out),
                          "--ranks", "4", "--steps", "3"], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 3
    nodes = result["nodes"]
    assert len(set(nodes)) == 2 and nodes[0] == nodes[1] and nodes[2] == nodes[3], "ranks 0-1 on one node, 2-3 on the other"
    for check in result["checks"]:
        assert check["exact"] == [True] * 4, f"step {check['step']}: a replica differs from the trainer"
        assert set(check["requests"]) == {f"rollout/replica_{i}/requests" for i in range(4)}
        assert all(n > 0 for n in check["requests"].values()), "every rank's replica served this step"
    digests = [c["digest"] for c in result["checks"]]
    assert len(set(digests)) == 3, "the weights moved every step (so the equality is of new weights)"
    assert all(c["generated_tokens"] > 0 for c in result["counters"])


def _colocated(model_dir, out: Path, *args: str) -> dict:
    run = subprocess.run([sys.executable, str(HERE / "colocated_run.py"), str(model_dir), str(out), *args],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_colocated_replicas_one_step_off(tiny_model_dir, tmp_path):
    """The next rollout runs on the ranks' replicas through the update (their KV caches kept): every sync still
    leaves each replica equal to the trainer, and later steps train on tokens one version old."""
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(HERE / "colocated_run.py"), str(tiny_model_dir), str(out),
                          "--ranks", "2", "--steps", "3", "--rollout-mode", "one_step_off"], capture_output=True,
                         text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 3
    assert all(check["exact"] == [True, True] for check in result["checks"])
    assert result["staleness_max"] == [0, 1, 1], "step 1 trains on version 0, later steps one version behind"


@pytest.mark.slow
def test_agent_workers_one_step_off(tiny_model_dir, tmp_path):
    """Episodes in two agent-worker actors, one step off: the replicas pause and version the workers' engine calls
    at each sync, so step 1 trains at staleness 0 and later steps at exactly 1 (a version the replica did not
    record would read 0 or 2), every token of a step within versions [step - 2, step - 1]."""
    result = _colocated(tiny_model_dir, tmp_path / "out.json", "--ranks", "2", "--steps", "3", "--agent-workers", "2",
                        "--rollout-mode", "one_step_off", "--set", f"trainer.rollout_data_dir={tmp_path / 'data'}")
    assert result["steps"] == 3
    assert all(check["exact"] == [True, True] for check in result["checks"])
    assert result["staleness_max"] == [0, 1, 1] and result["policy_version"] == [0, 1, 2]
    for step in (1, 2, 3):
        trajectories = read_jsonl(tmp_path / "data" / f"{step}.jsonl")
        versions = {v for t in trajectories for v in t.sampled_versions}
        assert versions and versions <= {max(step - 2, 0), step - 1}, (step, versions)


@pytest.mark.slow
def test_agent_workers_async_max_staleness_zero_is_their_sync_run(tiny_model_dir, tmp_path):
    """The same seed with agent workers, sync and async with max_staleness 0: the same trajectories, step by step
    (one sequence per engine batch, so a sequence's numbers never depend on what else the replica ran)."""
    common = ["--ranks", "2", "--steps", "2", "--agent-workers", "2", "--set", "data.seed=5",
              "--set", "actor_rollout_ref.rollout.engine_kwargs.transformers.max_batch_size=1"]
    steps = {}
    for mode, extra in (("sync", []), ("async", ["--set", "trainer.max_staleness=0"])):
        data = tmp_path / mode / "data"
        result = _colocated(tiny_model_dir, tmp_path / mode / "out.json", *common, "--rollout-mode", mode, *extra,
                            "--set", f"trainer.rollout_data_dir={data}")
        assert result["steps"] == 2 and result["staleness_max"] == [0, 0]
        steps[mode] = [read_jsonl(data / f"{step}.jsonl") for step in (1, 2)]
    for ours, theirs in zip(steps["sync"], steps["async"]):
        assert [(t.uid, t.response_ids, t.rollout_logprobs, t.token_versions) for t in ours] == \
               [(t.uid, t.response_ids, t.rollout_logprobs, t.token_versions) for t in theirs]
    assert {v for t in steps["async"][1] for v in t.sampled_versions} == {1}


@pytest.mark.slow
def test_tensor_parallel_replicas_on_two_nodes(tiny_model_dir, tmp_path):
    """4 ranks over both nodes with rollout.tensor_model_parallel_size=2: two replicas, each the two ranks of one node
    (ranks 0-1 and 2-3). The router sees only the two leaders and both serve; after every step every rank's shard is
    its slice of the trainer's full parameters, bit for bit; the followers take no requests of their own."""
    result = _colocated(tiny_model_dir, tmp_path / "out.json", "--ranks", "4", "--steps", "2", "--tp", "2")
    assert result["steps"] == 2 and result["leaders"] == 2
    nodes = result["nodes"]
    assert nodes[0] == nodes[1] != nodes[2] == nodes[3], "each replica's ranks share a node"
    for check in result["checks"]:
        assert check["exact"] == [True] * 4, f"step {check['step']}: a shard differs from its slice of the trainer's"
        assert all(n == 20 for n in check["sharded"]), "q/k/v (+biases), o, gate, up, down of both layers, every rank"
        assert set(check["requests"]) == {"rollout/replica_0/requests", "rollout/replica_1/requests"}
        assert all(n > 0 for n in check["requests"].values()), "both replicas served this step"
    counters = result["counters"]
    assert counters[0]["generated_tokens"] > 0 and counters[2]["generated_tokens"] > 0
    assert counters[1]["generated_tokens"] == counters[0]["generated_tokens"], "a follower ran its leader's steps"


@pytest.mark.slow
def test_tensor_parallel_replica_one_step_off_with_agent_workers(tiny_model_dir, tmp_path):
    """One TP=2 replica over 2 ranks, one step off, episodes in two agent-worker actors: the next rollout runs on the
    replica through the update, so every sync meets steps in flight; each still leaves both shards exact, and later
    steps train one version behind."""
    result = _colocated(tiny_model_dir, tmp_path / "out.json", "--ranks", "2", "--steps", "3", "--tp", "2",
                        "--rollout-mode", "one_step_off", "--agent-workers", "2")
    assert result["steps"] == 3 and result["leaders"] == 1
    assert all(check["exact"] == [True, True] for check in result["checks"])
    assert result["staleness_max"] == [0, 1, 1]
