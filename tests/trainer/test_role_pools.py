"""A critic and a reference on a pool of their own (`trainer.mapping`), against the same run with every role in the
actor's ranks: the same seed gives the same losses, values and weights to the bit, a checkpoint saved with the
critic's own group resumes to the same step, and a pool the cluster cannot hold stops before anything is placed.

Why equality to the bit can be asked for: the critic's and the reference's ranks build the same models from the
same files under the same seed (loading the actor's weights draws no random numbers, so the critic's fresh value
head is initialised alike), run with the same thread count on a group of the same size, and get the same
micro-batches from the driver.
"""

from __future__ import annotations

import pytest
import ray

from agentgym.errors import ConfigError
from agentgym.trainer.driver import RLTrainer

pytestmark = pytest.mark.slow
PPO = ("algorithm.adv_estimator=gae", "critic.enable=true", "actor_rollout_ref.actor.use_kl_loss=true",
       "trainer.use_ray=true", "trainer.n_gpus_per_node=1", "actor_rollout_ref.actor.use_torch_compile=false",
       "critic.optim.lr=1e-2", "ray_kwargs.ray_init.num_cpus=2", "trainer.critic_warmup=0")
OWN_POOL = ("trainer.mapping.critic=aux_pool", "trainer.mapping.ref=aux_pool",
            "trainer.resource_pool_spec={global_pool: [1], aux_pool: [1]}")


def _learned(metrics: dict[str, float]) -> dict[str, float]:
    """What the step computed (timings, throughput and memory figures differ from run to run)."""
    return {k: v for k, v in metrics.items() if not k.startswith(("timing_s/", "perf/", "memory/"))}


async def _steps(config, trajectories, steps: int, *, save: bool = False, resume: bool = False):
    trainer = RLTrainer(config)
    trainer.start_workers()
    try:
        if resume:
            assert await trainer.load_checkpoint(trainer.checkpoint_root / "global_step_1")
        history = []
        for _ in range(steps):
            history.append(_learned(await trainer.train_step(trajectories)))
            if save:
                await trainer.save_checkpoint()
        weights = await trainer.actor_state_dict()
        placement = {"actor": ray.get([a.pid.remote() for a in trainer.workers.actors]),
                     "critic": ray.get([a.pid.remote() for a in trainer.group_of("critic").actors]),
                     "ref": ray.get([a.pid.remote() for a in trainer.group_of("ref").actors])}
        if trainer.group_of("critic") is not trainer.workers:
            with pytest.raises(ray.exceptions.RayTaskError, match=r"this worker \(actor\) has no critic"):
                await trainer.workers.call("compute_values", [([],)])
    finally:
        trainer.close()
    return history, weights, placement


async def test_critic_and_ref_on_their_own_pool_match_the_colocated_run(ray_session, config_for, trajectories,
                                                                       tmp_path):
    together, together_weights, where = await _steps(config_for(*PPO), trajectories, 2)
    assert where["critic"] == where["ref"] == where["actor"], "colocated: every role in the actor's rank"
    assert together[1]["critic/vf_loss"] != together[0]["critic/vf_loss"], "the critic learned between the steps"
    assert together[0]["actor/kl_loss"] == 0.0 and together[1]["actor/kl_loss"] > 0, "the reference was used"

    own = config_for(*PPO, *OWN_POOL, f"trainer.default_local_dir={tmp_path}")
    first, _, where = await _steps(own, trajectories, 1, save=True)
    assert where["critic"] == where["ref"] and where["critic"] != where["actor"], \
        "critic and reference in one group of their own, in another process than the actor's"
    saved = sorted(p.name for p in (tmp_path / "global_step_1").iterdir())
    assert {"actor", "critic", "rng_rank0.pt", "rng_ref+critic_rank0.pt"} <= set(saved), saved
    second, weights, _ = await _steps(own, trajectories, 1, resume=True)

    assert first[0] == together[0]
    assert second[0] == together[1], "resumed from the checkpoint the two groups wrote, step 2 is the same"
    assert weights.keys() == together_weights.keys()
    assert all(bool((weights[k] == v).all()) for k, v in together_weights.items())


def test_a_critic_pool_the_cluster_cannot_hold_stops_before_placing(ray_session, config_for):
    from ray.util.placement_group import placement_group_table

    from agentgym.trainer.workers import start_worker_group

    cpus = int(ray.cluster_resources()["CPU"])
    cfg = config_for(*PPO, "trainer.mapping.critic=critic_pool",
                     f"trainer.resource_pool_spec={{global_pool: [1], critic_pool: [{cpus}]}}")
    before = {k for k, g in placement_group_table().items() if g["state"] != "REMOVED"}
    with pytest.raises(ConfigError) as caught:
        start_worker_group(cfg, total_steps=1)
    text = str(caught.value)
    assert f"critic_pool [{cpus}] (critic)" in text and "global_pool [1] (actor_rollout+ref)" in text
    assert "short by 1 CPU slot" in text and "trainer.resource_pool_spec" in text
    after = {k for k, g in placement_group_table().items() if g["state"] != "REMOVED"}
    assert after == before, "nothing was reserved"
