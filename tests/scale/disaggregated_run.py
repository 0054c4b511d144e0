"""A GRPO run with a separate rollout pool on a two-node Ray cluster built on this machine; writes one JSON of what
it saw.

    python tests/scale/disaggregated_run.py MODEL_DIR OUT_JSON [--ranks 2] [--replicas 2] [--steps 2]

Run as its own process by tests/scale/test_disaggregated.py, so the cluster it starts and stops is its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from tests.scale.two_node import arithmetic_config, fit_checked, run_on_two_nodes, run_parser


async def run(model_dir: str, out: Path, ranks: int, replicas: int, steps: int, rollout_mode: str = "sync") -> dict:
    cfg = arithmetic_config(model_dir, out.parent / "run", steps=steps, batch=2 * replicas, overrides=[
        "trainer.nnodes=1", f"trainer.n_gpus_per_node={ranks}", "actor_rollout_ref.rollout.placement=separate",
        f"actor_rollout_ref.rollout.n_gpus_per_node={replicas}",
        "actor_rollout_ref.rollout.update_weights_bucket_megabytes=1", f"trainer.rollout_mode={rollout_mode}",
    ])

    def inspect(trainer) -> dict:
        pool = trainer.rollout_pool
        return {"trainer_nodes": ray.get([a.node_id.remote() for a in trainer.workers.actors]),
                "replica_nodes": ray.get([a.node_id.remote() for a in pool.actors]),
                "counters": ray.get([a.replica_counters.remote() for a in pool.actors]),
                "plan": {"buckets": len(pool.plan.buckets), "bytes": pool.plan.nbytes,
                         "dtypes": sorted({b.dtype for b in pool.plan.buckets})}}

    # The replicas checked after each step's broadcast are the rollout pool's actors.
    result = await fit_checked(cfg, rows=4 * replicas, replicas=lambda t: t.rollout_pool.actors, inspect=inspect)
    left = ray.util.placement_group_table()
    return {**result, "placement_groups_left": sum(1 for g in left.values() if g["state"] != "REMOVED")}


def main() -> int:
    parser = run_parser(ranks=2, steps=2)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    # Two nodes: the trainer's pool packs onto one, the rollout pool onto the other (neither fits beside the other).
    return run_on_two_nodes(args.ranks, args.replicas,
                            lambda: run(args.model_dir, args.out, args.ranks, args.replicas, args.steps, args.rollout_mode), args.out)


if __name__ == "__main__":
    sys.exit(main())
