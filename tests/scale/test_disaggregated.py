"""A separate rollout pool, and resource pools that do not fit.

The run: 2 trainer ranks on one node and 2 rollout replica actors on the other (a two-node Ray cluster built on
this machine), GRPO steps of the arithmetic tool task; every replica generates, and after every step's broadcast
(gloo, from trainer rank 0, in buckets) every replica's weights equal the trainer's full parameters bit for bit.
The pools: a request the cluster cannot hold stops before anything is placed, naming the pool and what is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.trainer.workers.pools import check_pools_fit, plan_pools

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_separate_rollout_pool_synced_by_broadcast(tiny_model_dir, tmp_path):
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(HERE / "disaggregated_run.py"), str(tiny_model_dir), str(out),
                          "--ranks", "2", "--replicas", "2", "--steps", "3"], capture_output=True, text=True,
                         timeout=900, env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 3
    trainer, replicas = result["trainer_nodes"], result["replica_nodes"]
    assert len(set(trainer)) == 1 and len(set(replicas)) == 1 and trainer[0] != replicas[0], \
        "the trainer's pool and the rollout pool each packed onto a node of their own"
    assert result["plan"]["buckets"] > 1, "the 1 MB buckets split the tiny model's weights"
    for check in result["checks"]:
        assert check["exact"] == [True, True], f"step {check['step']}: a replica differs from the trainer"
        assert set(check["requests"]) == {"rollout/replica_0/requests", "rollout/replica_1/requests"}
        assert all(n > 0 for n in check["requests"].values()), "every rollout actor served this step"
    digests = [c["digest"] for c in result["checks"]]
    assert len(set(digests)) == 3, "the weights moved every step (so the equality is of new weights)"
    assert all(c["generated_tokens"] > 0 for c in result["counters"])
    assert result["placement_groups_left"] == 0, "both pools' placement groups were removed at the end"


@pytest.mark.slow
def test_separate_rollout_pool_one_step_off(tiny_model_dir, tmp_path):
    """The next step's rollout runs on the pool while the trainer updates; each broadcast still leaves every replica
    equal to the trainer, and the steps after the first train on tokens one version old."""
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(HERE / "disaggregated_run.py"), str(tiny_model_dir), str(out),
                          "--ranks", "1", "--replicas", "1", "--steps", "3", "--rollout-mode", "one_step_off"],
                         capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 3
    assert all(check["exact"] == [True] for check in result["checks"])
    assert result["staleness_max"] == [0, 1, 1], "step 1 trains on version 0, later steps one version behind"
    assert result["placement_groups_left"] == 0


def _cfg(model_dir, *overrides: str):
    return load_config(None, [f"actor_rollout_ref.model.path={model_dir}", "trainer.device=cpu",
                              "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                              *overrides])


@pytest.fixture
def ray_two_cpus():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


def test_a_rollout_pool_the_cluster_cannot_hold_stops_at_once(tiny_model_dir, ray_two_cpus):
    from ray.util.placement_group import placement_group_table

    from agentgym.trainer.workers.group import start_worker_group

    cpus = int(ray_two_cpus.cluster_resources()["CPU"])
    cfg = _cfg(tiny_model_dir, f"trainer.n_gpus_per_node={cpus}", "actor_rollout_ref.rollout.placement=separate",
               "actor_rollout_ref.rollout.n_gpus_per_node=3")
    before = {k for k, g in placement_group_table().items() if g["state"] != "REMOVED"}
    with pytest.raises(ConfigError) as caught:
        start_worker_group(cfg, total_steps=1)
    text = str(caught.value)
    assert "rollout_pool [3]" in text and f"global_pool [{cpus}]" in text and "short by" in text
    assert "trainer.resource_pool_spec" in text
    after = {k for k, g in placement_group_table().items() if g["state"] != "REMOVED"}
    assert after == before, "nothing was reserved"


def test_pool_entries_are_placed_node_by_node(tiny_model_dir):
    """Enough devices in total is not enough: each node entry of a pool must fit on one node."""
    cfg = _cfg(tiny_model_dir, "trainer.n_gpus_per_node=2", "actor_rollout_ref.rollout.placement=separate",
               "trainer.resource_pool_spec={global_pool: [2], rollout_pool: [1, 1]}")
    plan = plan_pools(cfg)
    assert plan.pool_of("actor_rollout").per_node == (2,) and plan.pool_of("rollout").per_node == (1, 1)
    check_pools_fit(plan, use_gpu=True, nodes=[2, 1, 1])
    with pytest.raises(ConfigError, match="global_pool's node of 2 GPU"):
        check_pools_fit(plan, use_gpu=True, nodes=[1, 1, 1, 1])


def test_mappings_this_trainer_cannot_run_name_the_key(tiny_model_dir):
    with pytest.raises(ConfigError, match="trainer.mapping.rollout=elsewhere names a pool"):
        plan_pools(_cfg(tiny_model_dir, "actor_rollout_ref.rollout.placement=separate",
                        "trainer.mapping.rollout=elsewhere"))
    with pytest.raises(ConfigError, match="trainer.use_ray=false runs one in-process rank"):
        plan_pools(_cfg(tiny_model_dir, "trainer.use_ray=false", "critic.enable=true", "trainer.mapping.critic=critic_pool",
                        "trainer.resource_pool_spec={global_pool: [1], critic_pool: [1]}"))
    with pytest.raises(ConfigError, match="puts critic and rollout on one pool"):
        plan_pools(_cfg(tiny_model_dir, "critic.enable=true",
                        "actor_rollout_ref.rollout.placement=separate", "trainer.mapping.critic=rollout_pool"))
    # A critic and a reference on one pool of their own: one group whose ranks build both.
    plan = plan_pools(_cfg(tiny_model_dir, "critic.enable=true",
                           "actor_rollout_ref.actor.use_kl_loss=true", "trainer.mapping.critic=aux_pool",
                           "trainer.mapping.ref=aux_pool", "trainer.resource_pool_spec={global_pool: [1], aux_pool: [2]}"))
    assert [(p.name, p.worker_roles, p.size) for p in plan.own_trainer_pools()] == [("aux_pool", ("ref", "critic"), 2)]
    assert plan.pool_of("actor_rollout").worker_roles == ("actor",)
    with pytest.raises(ConfigError, match="colocated placement"):
        plan_pools(_cfg(tiny_model_dir, "actor_rollout_ref.rollout.placement=separate",
                        "trainer.mapping.rollout=global_pool"))
    with pytest.raises(ConfigError, match="holds 2 ranks but trainer.nnodes x trainer.n_gpus_per_node = 1"):
        plan_pools(_cfg(tiny_model_dir, "trainer.resource_pool_spec={global_pool: [1, 1]}"))
    # The default: one pool, every role of the trainer on it (today's behaviour).
    plan = plan_pools(_cfg(tiny_model_dir, "trainer.nnodes=2", "trainer.n_gpus_per_node=4", "critic.enable=true"))
    assert list(plan.pools) == ["global_pool"] and plan.pools["global_pool"].per_node == (4, 4)
    assert plan.role_pool == {"actor_rollout": "global_pool", "critic": "global_pool"}


def test_a_reward_pool_counts_on_gpus_only(tiny_model_dir, tmp_path):
    """verl's reward_model.enable_resource_pool: its own pool of GPUs, which the fit check counts; on CPU its
    workers take no slot."""
    cfg = _cfg(tiny_model_dir, "reward_model.enable=true", f"reward_model.model.path={tiny_model_dir}",
               "reward_model.enable_resource_pool=true", "reward_model.nnodes=1",
               "reward_model.n_gpus_per_node=2")
    plan = plan_pools(cfg)
    assert plan.role_pool["reward_model"] == "reward_pool" and plan.pools["reward_pool"].per_node == (2,)
    check_pools_fit(plan, use_gpu=False, nodes=[1])
    with pytest.raises(ConfigError, match=r"reward_pool \[2\] \(reward_model\).*short by 1 GPU"):
        check_pools_fit(plan, use_gpu=True, nodes=[2])
    with pytest.raises(ConfigError, match="reward_model.n_gpus_per_node"):
        plan_pools(_cfg(tiny_model_dir, "reward_model.enable=true", f"reward_model.model.path={tiny_model_dir}",
                        "reward_model.enable_resource_pool=true"))
