"""What the two-node run scripts (colocated_run.py, disaggregated_run.py) share: a Ray cluster of two nodes built on
this machine, the arithmetic tool task's GRPO config, a tracker that compares every rollout replica's weights with
the trainer's full parameters after every step's sync, and the `main` that runs a script's coroutine on the cluster
and writes its JSON. Each script runs as its own process, so the cluster it starts and stops is its own."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable

import ray
import torch
from ray.cluster_utils import Cluster

from agentgym.config import load_config
from agentgym.config.schema import AgentGymConfig
from agentgym.rollout.build import make_rollout
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.tracking import MetricsTracker
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows

ReplicaActors = Callable[[RLTrainer], list[Any]]
# (trainer, its full state dict) -> (each replica's state dict, the trainer's tensors in the replicas' form)
ReplicaStates = Callable[[RLTrainer, dict[str, torch.Tensor]], tuple[list[dict], dict[str, torch.Tensor]]]


def arithmetic_config(model_dir: str, run_dir: Path, *, steps: int, batch: int, overrides: list[str]) -> AgentGymConfig:
    """GRPO on CPU Ray ranks over the arithmetic task: 2 samples a prompt, short two-turn episodes, a large
    learning rate (the weights visibly move every step)."""
    return load_config(None, [
        f"actor_rollout_ref.model.path={model_dir}", "actor_rollout_ref.model.attn_implementation=eager",
        "trainer.device=cpu", "trainer.use_ray=true", "actor_rollout_ref.rollout.n=2",
        f"data.train_batch_size={batch}", f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        "data.max_response_length=24", "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
        "actor_rollout_ref.rollout.multi_turn.tool_schemas_in_prompt=false",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
        f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={run_dir}",
        "actor_rollout_ref.actor.optim.lr=1e-2", "actor_rollout_ref.actor.use_torch_compile=false", *overrides,
    ])


class ReplicaCheckTracker(MetricsTracker):
    """After every step (and its weight sync): each replica's weights against the trainer's full parameters, bit
    for bit; `replicas` names the actors that hold them (the trainer's own ranks, or a rollout pool's). `sharded`:
    the actors hold tensor-parallel shards, each compared with its slice of the full parameter."""

    def __init__(self, trainer: RLTrainer, run_dir: Path, steps: int, replicas: ReplicaActors, sharded: bool = False,
                 states: ReplicaStates | None = None):
        super().__init__(run_dir, ["jsonl"], steps)
        self.trainer = trainer
        self.replicas = replicas
        self.sharded = sharded
        self.states = states
        self.checks: list[dict] = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        super().log(step, metrics)
        full = ray.get([a.actor_state_dict.remote() for a in self.trainer.workers.actors])[0]  # collective
        if self.states is None:
            actors = self.replicas(self.trainer)
            states = ray.get([a.replica_state_dict.remote() for a in actors])
            slices = ray.get([a.replica_shard_slices.remote() for a in actors]) if self.sharded else [{}] * len(actors)
        else:  # replicas read some other way (servers over HTTP), each tensor as the trainer's converted to it
            states, full = self.states(self.trainer, full)
            slices = [{}] * len(states)
        exact = [(self.states is not None or set(rep) == set(full))
                 and all(torch.equal(rep[n], t.narrow(*where[n]) if n in where else t) for n, t in full.items())
                 for rep, where in zip(states, slices)]
        digest = float(sum(t.double().sum() for t in full.values()))
        self.checks.append({"step": step, "exact": exact, "names": len(full), "digest": digest,
                            "requests": {k: v for k, v in metrics.items() if k.startswith("rollout/replica_")},
                            "reward": metrics.get("critic/score/mean"), "sync_s": metrics.get("timing_s/weight_sync"),
                            "sharded": [len(where) for where in slices]})


async def fit_checked(cfg: AgentGymConfig, *, rows: int, replicas: ReplicaActors,
                      inspect: Callable[[RLTrainer], dict], sharded: bool = False,
                      states: ReplicaStates | None = None) -> dict:
    """`fit` on `rows` arithmetic rows with the replicas checked after every step; `inspect(trainer)` adds what a
    script reads from the live actors before they stop."""
    rollout = make_rollout(cfg)
    # The tiny random model never solves a task; a reward that differs within groups makes every step move the weights.
    trainer = RLTrainer(cfg, rollout=rollout, dataset=make_rows(ArithmeticTaskConfig(num_rows=rows, seed=1)),
                        reward_fn=lambda t: float(len(t.response_ids) % 3 == 0))
    run_dir = Path(cfg.checkpoint_dir)
    tracker = None
    try:
        trainer.start_workers()
        tracker = ReplicaCheckTracker(trainer, run_dir, cfg.trainer.total_training_steps, replicas, sharded, states)
        history = await trainer.fit(tracker)
        seen = inspect(trainer)
    finally:
        if tracker is not None:
            tracker.close()
        trainer.close()
        await rollout.close()
    return {"steps": len(history), "checks": tracker.checks,
            "tool_calls": [h.get("rollout/tool_calls/mean") for h in history],
            "reruns": [h.get("rollout/agent_workers/reruns") for h in history],
            "staleness_max": [h.get("rollout/staleness/max") for h in history],
            "staleness_min": [h.get("rollout/staleness/min") for h in history],
            "policy_version": [h.get("rollout/policy_version") for h in history], **seen}


def run_parser(*, ranks: int, steps: int) -> argparse.ArgumentParser:
    """MODEL_DIR OUT_JSON [--ranks N] [--steps N] [--rollout-mode M] [--set KEY=VALUE ...]; a script adds its own
    arguments to it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out", type=Path)
    parser.add_argument("--ranks", type=int, default=ranks)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--rollout-mode", default="sync", choices=["sync", "one_step_off", "async"])
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="a dotted config override")
    return parser


def run_on_two_nodes(head_cpus: int, other_cpus: int, run: Callable[[], Awaitable[dict]], out: Path) -> int:
    """Start a two-node cluster (`head_cpus` and `other_cpus` CPU slots), run the coroutine on it, stop the
    cluster and write the coroutine's answer to `out` as JSON."""
    import json

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus})
    cluster.add_node(num_cpus=other_cpus)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        result = asyncio.run(run())
    finally:
        ray.shutdown()
        cluster.shutdown()
    out.write_text(json.dumps(result))
    return 0
