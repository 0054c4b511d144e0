"""A colocated GRPO run on a two-node Ray cluster built on this machine; writes one JSON of what it saw.

    python tests/scale/colocated_run.py MODEL_DIR OUT_JSON [--ranks 4] [--steps 3] [--agent-workers 1]
        [--rollout-mode sync] [--tp 1] [--set KEY=VALUE ...]

Run as its own process by tests/scale/test_colocated.py, so the cluster it starts and stops is its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from tests.scale.two_node import arithmetic_config, fit_checked, run_on_two_nodes, run_parser


async def run(model_dir: str, out: Path, ranks: int, steps: int, agent_workers: int = 1,
              rollout_mode: str = "sync", overrides: list[str] | None = None, tp: int = 1) -> dict:
    cfg = arithmetic_config(model_dir, out.parent / "run", steps=steps, batch=2 * ranks, overrides=[
        "trainer.nnodes=2", f"trainer.n_gpus_per_node={ranks // 2}", "actor_rollout_ref.rollout.placement=colocated",
        f"actor_rollout_ref.rollout.agent.num_workers={agent_workers}", f"trainer.rollout_mode={rollout_mode}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp}", *(overrides or []),
    ])

    def inspect(trainer) -> dict:
        actors = trainer.workers.actors
        return {"nodes": ray.get([a.node_id.remote() for a in actors]),
                "counters": ray.get([a.replica_counters.remote() for a in actors]),
                "leaders": len(trainer.workers.replica_handles())}

    # Every rank hosts a replica (or its shard of one): the replicas checked after each step are the trainer's ranks.
    return await fit_checked(cfg, rows=4 * ranks, replicas=lambda t: t.workers.actors, inspect=inspect, sharded=tp > 1)


def main() -> int:
    parser = run_parser(ranks=4, steps=3)
    parser.add_argument("--agent-workers", type=int, default=1)
    parser.add_argument("--tp", type=int, default=1, help="rollout.tensor_model_parallel_size")
    args = parser.parse_args()
    return run_on_two_nodes(args.ranks // 2, args.ranks // 2,
                            lambda: run(args.model_dir, args.out, args.ranks, args.steps, args.agent_workers,
                                        args.rollout_mode, args.overrides, args.tp), args.out)


if __name__ == "__main__":
    sys.exit(main())
