"""A colocated GRPO run on a two-node Ray cluster built on this machine; prints one JSON line of what it saw.

    python tests/scale/colocated_run.py MODEL_DIR OUT_JSON [--ranks 4] [--steps 3] [--agent-workers 1]

Run as its own process by tests/scale/test_colocated.py, so the cluster it starts and stops is its own.
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
    """After every step: each replica's weights against the trainer's full parameters, bit for bit."""

    def __init__(self, trainer: RLTrainer, run_dir: Path, steps: int):
        super().__init__(run_dir, ["jsonl"], steps)
        self.trainer = trainer
        self.checks: list[dict] = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        super().log(step, metrics)
        actors = self.trainer.workers.actors
        full = ray.get([a.actor_state_dict.remote() for a in actors])[0]  # a collective: every rank takes part
        replicas = ray.get([a.replica_state_dict.remote() for a in actors])
        exact = [all(torch.equal(rep[name], tensor) for name, tensor in full.items()) for rep in replicas]
        digest = float(sum(t.double().sum() for t in full.values()))
        self.checks.append({"step": step, "exact": exact, "names": len(full), "digest": digest,
                            "requests": {k: v for k, v in metrics.items() if k.startswith("rollout/replica_")},
                            "reward": metrics.get("critic/score/mean")})


async def run(model_dir: str, out: Path, ranks: int, steps: int, agent_workers: int = 1,
              rollout_mode: str = "sync") -> dict:
    cfg = load_config(None, [
        f"actor_rollout_ref.model.path={model_dir}", "actor_rollout_ref.model.attn_implementation=eager",
        "trainer.device=cpu", "trainer.use_ray=true", "trainer.nnodes=2", f"trainer.n_gpus_per_node={ranks // 2}",
        "actor_rollout_ref.rollout.placement=colocated", "actor_rollout_ref.rollout.n=2",
        f"data.train_batch_size={2 * ranks}", f"actor_rollout_ref.actor.ppo_mini_batch_size={2 * ranks}",
        "data.max_response_length=24", "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
        "actor_rollout_ref.rollout.multi_turn.tool_schemas_in_prompt=false",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
        f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={out.parent / 'run'}",
        "actor_rollout_ref.actor.optim.lr=1e-2", "actor_rollout_ref.actor.use_torch_compile=false",
        f"actor_rollout_ref.rollout.agent.num_workers={agent_workers}", f"trainer.rollout_mode={rollout_mode}",
    ])
    rows = make_rows(ArithmeticTaskConfig(num_rows=4 * ranks, seed=1))
    rollout = make_rollout(cfg)
    # The tiny random model never solves a task; a reward that differs within groups makes every step move the weights.
    trainer = RLTrainer(cfg, rollout=rollout, dataset=rows, reward_fn=lambda t: float(len(t.response_ids) % 3 == 0))
    tracker = None
    try:
        trainer.start_workers()
        tracker = CheckingTracker(trainer, out.parent / "run", steps)
        history = await trainer.fit(tracker)
        nodes = ray.get([a.node_id.remote() for a in trainer.workers.actors])
        counters = ray.get([a.replica_counters.remote() for a in trainer.workers.actors])
    finally:
        if tracker is not None:
            tracker.close()
        trainer.close()
        await rollout.close()
    return {"steps": len(history), "checks": tracker.checks, "nodes": nodes, "counters": counters,
            "tool_calls": [h.get("rollout/tool_calls/mean") for h in history],
            "reruns": [h.get("rollout/agent_workers/reruns") for h in history],
            "staleness_max": [h.get("rollout/staleness/max") for h in history]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out", type=Path)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--agent-workers", type=int, default=1)
    parser.add_argument("--rollout-mode", default="sync", choices=["sync", "one_step_off", "async"])
    args = parser.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.ranks // 2})
    cluster.add_node(num_cpus=args.ranks // 2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        result = asyncio.run(run(args.model_dir, args.out, args.ranks, args.steps, args.agent_workers,
                                 args.rollout_mode))
    finally:
        ray.shutdown()
        cluster.shutdown()
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
