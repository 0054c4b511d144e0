"""A GRPO run with a separate rollout pool on a two-node Ray cluster built on this machine; writes one JSON of what
it saw.

    python tests/scale/disaggregated_run.py MODEL_DIR OUT_JSON [--ranks 2] [--replicas 2] [--steps 2]

Run as its own process by tests/scale/test_disaggregated.py, so the cluster it starts and stops is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import ray
import torch
from ray.cluster_utils import Cluster

from agentgym.config import load_config
from agentgym.rollout.build import make_rollout
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.tracking import MetricsTracker
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows


class CheckingTracker(MetricsTracker):
    """After every step (and its broadcast sync): each rollout replica's weights against the trainer's full
    parameters, bit for bit."""

    def __init__(self, trainer: RLTrainer, run_dir: Path, steps: int):
        super().__init__(run_dir, ["jsonl"], steps)
        self.trainer = trainer
        self.checks: list[dict] = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        super().log(step, metrics)
        full = ray.get([a.actor_state_dict.remote() for a in self.trainer.workers.actors])[0]  # collective
        replicas = ray.get([a.replica_state_dict.remote() for a in self.trainer.rollout_pool.actors])
        exact = [all(torch.equal(rep[name], tensor) for name, tensor in full.items()) for rep in replicas]
        digest = float(sum(t.double().sum() for t in full.values()))
        self.checks.append({"step": step, "exact": exact, "names": len(full), "digest": digest,
                            "requests": {k: v for k, v in metrics.items() if k.startswith("rollout/replica_")},
                            "sync_s": metrics.get("timing_s/weight_sync")})


async def run(model_dir: str, out: Path, ranks: int, replicas: int, steps: int, rollout_mode: str = "sync") -> dict:
    cfg = load_config(None, [
        f"actor_rollout_ref.model.path={model_dir}", "actor_rollout_ref.model.attn_implementation=eager",
        "trainer.device=cpu", "trainer.use_ray=true", "trainer.nnodes=1", f"trainer.n_gpus_per_node={ranks}",
        "actor_rollout_ref.rollout.placement=separate", f"actor_rollout_ref.rollout.n_gpus_per_node={replicas}",
        "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.update_weights_bucket_megabytes=1",
        f"data.train_batch_size={2 * replicas}", f"actor_rollout_ref.actor.ppo_mini_batch_size={2 * replicas}",
        "data.max_response_length=24", "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
        "actor_rollout_ref.rollout.multi_turn.tool_schemas_in_prompt=false",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
        f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={out.parent / 'run'}",
        "actor_rollout_ref.actor.optim.lr=1e-2", "actor_rollout_ref.actor.use_torch_compile=false",
        f"trainer.rollout_mode={rollout_mode}",
    ])
    rows = make_rows(ArithmeticTaskConfig(num_rows=4 * replicas, seed=1))
    rollout = make_rollout(cfg)
    # The tiny random model never solves a task; a reward that differs within groups makes every step move the weights.
    trainer = RLTrainer(cfg, rollout=rollout, dataset=rows, reward_fn=lambda t: float(len(t.response_ids) % 3 == 0))
    tracker = None
    try:
        trainer.start_workers()
        tracker = CheckingTracker(trainer, out.parent / "run", steps)
        history = await trainer.fit(tracker)
        trainer_nodes = ray.get([a.node_id.remote() for a in trainer.workers.actors])
        replica_nodes = ray.get([a.node_id.remote() for a in trainer.rollout_pool.actors])
        counters = ray.get([a.replica_counters.remote() for a in trainer.rollout_pool.actors])
        plan = trainer.rollout_pool.plan
        plan_info = {"buckets": len(plan.buckets), "bytes": plan.nbytes, "dtypes": sorted({b.dtype for b in plan.buckets})}
    finally:
        if tracker is not None:
            tracker.close()
        trainer.close()
        await rollout.close()
    left = ray.util.placement_group_table()
    return {"steps": len(history), "checks": tracker.checks, "trainer_nodes": trainer_nodes,
            "replica_nodes": replica_nodes, "counters": counters, "plan": plan_info,
            "tool_calls": [h.get("rollout/tool_calls/mean") for h in history],
            "staleness_max": [h.get("rollout/staleness/max") for h in history],
            "placement_groups_left": sum(1 for g in left.values() if g["state"] != "REMOVED")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out", type=Path)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rollout-mode", default="sync", choices=["sync", "one_step_off", "async"])
    args = parser.parse_args()
    # Two nodes: the trainer's pool packs onto one, the rollout pool onto the other (neither fits beside the other).
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.ranks})
    cluster.add_node(num_cpus=args.replicas)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        result = asyncio.run(run(args.model_dir, args.out, args.ranks, args.replicas, args.steps, args.rollout_mode))
    finally:
        ray.shutdown()
        cluster.shutdown()
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
