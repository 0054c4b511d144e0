"""Colocated placement, 1 rank against 2 ranks on the same global batch: the updated parameters agree, each rank's
replica holds them after the sync, and the memory hand-over runs in every rank (the replica refuses to generate
while its cache is released and generates again after the sync)."""

import pytest
import ray
import torch

from agentgym.rollout.engines import SamplingParams
from agentgym.trainer.driver import RLTrainer

pytestmark = pytest.mark.slow
COMMON = ("algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.optim.eps=1.0", "trainer.use_ray=true",
          "actor_rollout_ref.rollout.placement=colocated", "actor_rollout_ref.actor.use_torch_compile=false",
          "ray_kwargs.ray_init.num_cpus=2")
GREEDY = SamplingParams(max_new_tokens=4, temperature=0.0)


async def _colocated_step(config, trajectories):
    trainer = RLTrainer(config)
    trainer.start_workers()
    try:
        await trainer.workers.call("start_replica")
        await trainer.release_rollout_memory()
        actors = trainer.workers.actors
        for actor in actors:
            with pytest.raises(ray.exceptions.RayTaskError, match="released"):
                ray.get(actor.replica_generate.remote([2, 3, 4], GREEDY))
        metrics = await trainer.train_step(trajectories)
        await trainer.sync_weights()
        weights = await trainer.actor_state_dict()
        replicas = await trainer.workers.call("replica_state_dict")
        outs = ray.get([a.replica_generate.remote([2, 3, 4], GREEDY) for a in actors])
    finally:
        trainer.close()
    assert all(all(torch.equal(rep[k], v) for k, v in weights.items()) for rep in replicas)
    assert all(len(o.token_ids) == 4 for o in outs)
    return metrics, weights, [o.token_ids for o in outs]


async def test_two_colocated_ranks_update_as_one_rank_does(ray_session, config_for, trajectories):
    one, one_weights, one_tokens = await _colocated_step(config_for(*COMMON, "trainer.n_gpus_per_node=1"), trajectories)
    two, two_weights, two_tokens = await _colocated_step(config_for(*COMMON, "trainer.n_gpus_per_node=2"), trajectories)
    for name, tensor in one_weights.items():
        assert torch.allclose(two_weights[name], tensor, atol=2e-6, rtol=1e-5), name
    assert two["actor/grad_norm"] == pytest.approx(one["actor/grad_norm"], rel=1e-4)
    assert one_tokens[0] == two_tokens[0] == two_tokens[1], "the synced replicas generate alike"
