"""Colocated placement with `rollout.tensor_model_parallel_size=2` on 2 trainer ranks: one replica split over both.

GRPO steps of the arithmetic tool task run end to end (rollout through the replica's leader, update, weight sync);
after every step's sync each rank's shard equals its slice of the trainer's full parameters bit for bit, and the
replicated weights equal the full ones. Only the leader takes requests (the router sees one replica; the other
rank refuses), and the slices are Megatron's (heads for q/k/v and o, hidden units for the MLP).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch

from agentgym.rollout.build import make_rollout
from agentgym.rollout.engines import SamplingParams
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.tracking import MetricsTracker
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows
from tests.scale.two_node import arithmetic_config

pytestmark = pytest.mark.slow


class ShardCheckTracker(MetricsTracker):
    """After every step (and its weight sync): each rank's replica shard against the trainer's full parameters."""

    def __init__(self, trainer: RLTrainer, run_dir: Path, steps: int):
        super().__init__(run_dir, ["jsonl"], steps)
        self.trainer = trainer
        self.checks: list[dict] = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        super().log(step, metrics)
        actors = self.trainer.workers.actors
        full = ray.get([a.actor_state_dict.remote() for a in actors])[0]  # collective
        shards = ray.get([a.replica_state_dict.remote() for a in actors])
        slices = ray.get([a.replica_shard_slices.remote() for a in actors])
        exact = []
        for shard, where in zip(shards, slices):
            assert set(shard) == set(full)
            exact.append(all(torch.equal(shard[n], t.narrow(*where[n]) if n in where else t) for n, t in full.items()))
        self.checks.append({"step": step, "exact": exact, "slices": slices,
                            "digest": float(sum(t.double().sum() for t in full.values())),
                            "requests": {k: v for k, v in metrics.items() if k.startswith("rollout/replica_")}})


async def test_two_ranks_one_tp2_replica_train_and_sync_shards_exactly(ray_session, tiny_model_dir, tmp_path):
    cfg = arithmetic_config(str(tiny_model_dir), tmp_path / "run", steps=2, batch=4, overrides=[
        "trainer.n_gpus_per_node=2", "actor_rollout_ref.rollout.placement=colocated",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=2"])
    rollout = make_rollout(cfg)
    trainer = RLTrainer(cfg, rollout=rollout, dataset=make_rows(ArithmeticTaskConfig(num_rows=8, seed=1)),
                        reward_fn=lambda t: float(len(t.response_ids) % 3 == 0))
    tracker = None
    try:
        trainer.start_workers()
        tracker = ShardCheckTracker(trainer, Path(cfg.checkpoint_dir), 2)
        history = await trainer.fit(tracker)
        assert len(trainer.workers.replica_handles()) == 1
        leader, follower = trainer.workers.actors
        with pytest.raises(ray.exceptions.RayTaskError, match="not its tensor-parallel replica's leader"):
            ray.get(follower.replica_generate.remote([2, 3, 4], SamplingParams(max_new_tokens=2)))
        out = ray.get(leader.replica_generate.remote([2, 3, 4], SamplingParams(max_new_tokens=3, temperature=0.0)))
        assert len(out.token_ids) == 3 and out.policy_version == 2
    finally:
        if tracker is not None:
            tracker.close()
        trainer.close()
        await rollout.close()
    assert len(history) == 2
    checks = tracker.checks
    assert [c["exact"] for c in checks] == [[True, True]] * 2, "each rank's shard is its slice of the new weights"
    assert checks[0]["digest"] != checks[1]["digest"], "the weights moved, so the equality is of new weights"
    assert all(set(c["requests"]) == {"rollout/replica_0/requests"} and c["requests"]["rollout/replica_0/requests"] > 0
               for c in checks), "one replica, served by its leader"
    # Megatron's split of the tiny model (hidden 128, 4 heads and 2 kv heads of 32, MLP 384) for ranks 0 and 1.
    for rank, where in enumerate(checks[0]["slices"]):
        layer = "model.layers.1"
        assert where[f"{layer}.self_attn.q_proj.weight"] == (0, 64 * rank, 64)
        assert where[f"{layer}.self_attn.k_proj.bias"] == (0, 32 * rank, 32)
        assert where[f"{layer}.self_attn.v_proj.weight"] == (0, 32 * rank, 32)
        assert where[f"{layer}.self_attn.o_proj.weight"] == (1, 64 * rank, 64)
        assert where[f"{layer}.mlp.up_proj.weight"] == (0, 192 * rank, 192)
        assert where[f"{layer}.mlp.down_proj.weight"] == (1, 192 * rank, 192)
        assert "model.embed_tokens.weight" not in where and f"{layer}.input_layernorm.weight" not in where
