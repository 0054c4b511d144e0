"""Tensor-parallel in-process engines: a TP=2 replica on two gloo processes generates what the TP=1 engine does.

The same tiny model, the same requests (greedy, and seeded sampling), for both backends and a paged cache small
enough to preempt: the tokens are equal and the log-probs agree to fp32 rounding (the row-parallel sums are added in
another order), before and after a weight update of full weights (each rank keeps its slice) and a memory
release/resume cycle. The follower refuses requests of its own. Plus the checks that reject a size the model or the
world cannot be split by.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config

from agentgym.errors import ConfigError
from agentgym.rollout.engines.tensor_parallel import TP_KEY, ShardedWeights, check_shardable, check_world

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": str(HERE.parents[1]), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A paged cache of 11 usable blocks of 4 tokens: sequences preempt each other and are recomputed.
EXTRA = {"dynamic": [], "paged": [], "paged-preempting": ["--num-blocks", "12", "--block-size", "4"]}


def _run(model_dir: Path, tmp: Path, case: str, world: int) -> list[dict]:
    address = f"127.0.0.1:{_free_port()}"
    outs = [tmp / f"{case}-{world}-{rank}.json" for rank in range(world)]
    backend = case.split("-")[0]
    procs = [subprocess.Popen([sys.executable, str(HERE / "tp_run.py"), str(model_dir), str(outs[rank]), "--rank",
                               str(rank), "--world", str(world), "--address", address, "--backend", backend,
                               *EXTRA[case]],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(world)]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return [json.loads(o.read_text()) for o in outs]


@pytest.mark.parametrize("case", list(EXTRA))
def test_tp2_replica_generates_what_tp1_does(tiny_model_dir, tmp_path, case):
    (alone,) = _run(tiny_model_dir, tmp_path, case, 1)
    leader, follower = _run(tiny_model_dir, tmp_path, case, 2)
    assert alone["q_proj_rows"] == 2 * leader["q_proj_rows"] == 2 * follower["q_proj_rows"], "each rank keeps half the heads"
    sharded = set(leader["sharded"])
    assert sharded == set(follower["sharded"]) and len(sharded) == 2 * (7 + 3), "q/k/v (+biases), o, gate, up, down x 2 layers"
    if case.startswith("paged"):
        assert alone["kv_heads"] == 2 and leader["kv_heads"] == follower["kv_heads"] == 1, "each rank caches its kv heads"
        assert leader["preemptions"] == follower["preemptions"] == alone["preemptions"], "the same schedule"
        assert (alone["preemptions"] > 0) == (case == "paged-preempting")
    assert "leader" in follower["follower_refused"]
    for phase in ("first", "second"):
        assert len(leader[phase]) == len(alone[phase]) == 6
        for (tokens, logprobs, reason), (want_tokens, want_logprobs, want_reason) in zip(leader[phase], alone[phase]):
            assert tokens == want_tokens and reason == want_reason, phase
            assert len(tokens) == 12
            assert torch.allclose(torch.tensor(logprobs), torch.tensor(want_logprobs), atol=1e-4, rtol=0), phase
    # After the update each rank holds its slice of the same new weights: the halves add up to the whole.
    for name, total in alone["shard_sums"].items():
        if name in sharded:
            assert leader["shard_sums"][name] + follower["shard_sums"][name] == pytest.approx(total, abs=1e-3), name
        else:
            assert leader["shard_sums"][name] == follower["shard_sums"][name] == total, name


def test_sizes_that_do_not_split_are_config_errors_naming_the_key():
    config = Qwen2Config(hidden_size=96, intermediate_size=192, num_attention_heads=6, num_key_value_heads=2)
    check_shardable(config, 2)
    with pytest.raises(ConfigError, match="num_key_value_heads") as caught:
        check_shardable(config, 3)
    assert caught.value.entry == TP_KEY
    with pytest.raises(ConfigError, match="num_attention_heads"):
        check_shardable(config, 4)
    with pytest.raises(ConfigError, match="does not divide the 4 trainer ranks") as caught:
        check_world(4, 3)
    assert caught.value.entry == TP_KEY


def test_sharded_weights_read_each_ranks_slice_as_a_view():
    full = {"a.weight": torch.arange(12.0).view(4, 3), "b": torch.ones(2)}
    view = ShardedWeights(full, {"a.weight": (0, 2, 2)})
    assert torch.equal(view["a.weight"], full["a.weight"][2:4]) and view["a.weight"].data_ptr() == full["a.weight"][2].data_ptr()
    assert view["b"] is full["b"] and set(view) == set(full) and len(view) == 2


def test_config_rejects_tp_where_no_replica_spans_ranks(tiny_model_dir):
    from agentgym.config import load_config
    from agentgym.rollout.engines.registry import make_engine

    base = [f"actor_rollout_ref.model.path={tiny_model_dir}", "trainer.device=cpu", f"{TP_KEY}=2"]
    for placement in ("driver", "separate"):
        with pytest.raises(ConfigError, match="only the colocated placement"):
            load_config(None, [*base, "trainer.use_ray=true", f"actor_rollout_ref.rollout.placement={placement}"])
    with pytest.raises(ConfigError, match="does not divide the 3 trainer ranks"):
        load_config(None, [*base, "trainer.use_ray=true", "trainer.n_gpus_per_node=3",
                           "actor_rollout_ref.rollout.placement=colocated"])
    with pytest.raises(ConfigError, match="puts the engine in the driver") as caught:
        make_engine(load_config(None, base))  # auto placement on CPU: the driver's engine
    assert caught.value.entry == TP_KEY
    load_config(None, [*base, "trainer.use_ray=true", "trainer.n_gpus_per_node=4",
                       "actor_rollout_ref.rollout.placement=colocated"])
    load_config(None, [*base, "actor_rollout_ref.rollout.name=sglang"])  # servers take the key as their own TP


def test_a_step_that_fails_on_one_rank_only_ends_the_replica_at_once(tiny_model_dir, tmp_path):
    """The follower's third step fails and the leader's does not: the leader waits in that step's all-reduce for a
    rank that will never join. The follower leaves (exit 70) after its grace (2 s here), so the leader's requests
    fail within seconds, not at the group's 3-minute timeout."""
    address = f"127.0.0.1:{_free_port()}"
    outs = [tmp_path / f"fail-{rank}.json" for rank in range(2)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "tp_run.py"), str(tiny_model_dir), str(outs[rank]),
                               "--rank", str(rank), "--world", "2", "--address", address, "--fail-follower-step", "3"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(2)]
    try:
        logs = [p.communicate(timeout=150)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert procs[1].returncode == 70, logs[1][-3000:]
    assert "can no longer run in lock-step" in logs[1]
    leader = json.loads(outs[0].read_text())
    assert "generation failed" in leader["leader_error"], leader
    assert leader["leader_seconds"] < 60, leader
