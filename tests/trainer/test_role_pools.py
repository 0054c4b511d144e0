"""A critic and a reference on a pool of their own (`trainer.mapping`), against the same run with every role in the
actor's ranks: the same seed gives the same losses, values and weights to the bit, a checkpoint saved with the
critic's own group resumes to the same step, and a pool the cluster cannot hold stops before anything is placed.
With `trainer.concurrent_pools` the critic's group updates while the actor's does (the ranks' own clocks say so),
with the same results as one after another.

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
# On CPU the groups run one after another unless asked (their ranks would share the cores); these tests ask.
CONCURRENT = ("trainer.concurrent_pools=true",)


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

    own = config_for(*PPO, *OWN_POOL, *CONCURRENT, f"trainer.default_local_dir={tmp_path}")
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


SMALL_MICRO_BATCHES = ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1", "critic.ppo_micro_batch_size_per_gpu=1",
                       "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
                       "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1")


async def _spans_of_steps(config, trajectories, steps: int):
    """The steps' metrics, the actor's weights, and the calls each group's rank 0 logged (`TrainWorker.call_spans`)."""
    trainer = RLTrainer(config)
    trainer.start_workers()
    try:
        history = [await trainer.train_step(trajectories) for _ in range(steps)]
        weights = await trainer.actor_state_dict()
        spans = {"actor": ray.get(trainer.workers.actors[0].call_spans.remote()),
                 "aux": ray.get(trainer.group_of("critic").actors[0].call_spans.remote())}
    finally:
        trainer.close()
    return history, weights, spans


def _calls(spans, method: str):
    return [s for s in spans if s.method == method]


async def test_a_critic_on_its_own_pool_updates_while_the_actor_does(ray_session, config_for, trajectories):
    """The ranks' own clocks say the critic's update ran while the actor's did; with trainer.concurrent_pools unset
    (on CPU: off) the critic's update ended before the actor's began, and the reference's forward began after the old log-probs
    ended. Either way the results are the same to the bit."""
    concurrent, weights, spans = await _spans_of_steps(config_for(*PPO, *OWN_POOL, *CONCURRENT, *SMALL_MICRO_BATCHES),
                                                       trajectories, 2)
    actor_updates, critic_updates = _calls(spans["actor"], "update_actor"), _calls(spans["aux"], "update_critic")
    assert len(actor_updates) == len(critic_updates) == 2
    for actor_update, critic_update in zip(actor_updates, critic_updates):
        assert actor_update.overlaps(critic_update), (actor_update, critic_update)
    # The forwards are not checked for overlap: on the tiny model the old log-probs take a few milliseconds, less
    # than the aux group's memory mark before its forwards, so whether they meet is the machine's luck.
    aux_forwards = [s.method for s in spans["aux"] if s.method in ("compute_log_prob:ref", "compute_values")]
    assert aux_forwards == ["compute_log_prob:ref", "compute_values"] * 2, "on one group, ref then values, in turn"
    assert {"timing_s/forwards", "timing_s/updates", "timing_s/update_critic", "timing_s/update_actor"} <= set(
        concurrent[0])

    # trainer.concurrent_pools unset on CPU: one after another
    sequential, sequential_weights, spans = await _spans_of_steps(
        config_for(*PPO, *OWN_POOL, *SMALL_MICRO_BATCHES), trajectories, 2)
    for actor_update, critic_update in zip(_calls(spans["actor"], "update_actor"), _calls(spans["aux"], "update_critic")):
        assert critic_update.end <= actor_update.start, "one after the other: the critic's first"
    for old, ref in zip(_calls(spans["actor"], "compute_log_prob:actor"), _calls(spans["aux"], "compute_log_prob:ref")):
        assert old.end <= ref.start

    assert [_learned(m) for m in concurrent] == [_learned(m) for m in sequential]
    assert all(bool((weights[k] == v).all()) for k, v in sequential_weights.items())
