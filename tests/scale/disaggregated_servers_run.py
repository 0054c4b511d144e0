"""A GRPO run with a separate rollout pool whose actors launch SGLang-protocol servers (our test server over the
tiny model), on a two-node Ray cluster built on this machine; writes one JSON of what it saw.

    python tests/scale/disaggregated_servers_run.py MODEL_DIR OUT_JSON [--ranks 1] [--replicas 2] [--steps 3]
        [--weight-sync distributed|disk] [--shared-dir] [--rollout-mode sync|one_step_off|async]

Run as its own process by tests/scale/test_disaggregated_servers.py, so the cluster it starts and stops is its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import psutil
import ray
import torch

from tests.scale.two_node import arithmetic_config, fit_checked, run_on_two_nodes, run_parser

ROOT = Path(__file__).resolve().parents[2]


def server_states(trainer, full: dict[str, torch.Tensor]) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Every server's weights through SGLang's /get_weights_by_name (float32 lists: exact for bf16 values), and
    the trainer's tensors as the servers hold them (bf16, read as float32)."""
    states = []
    with httpx.Client(timeout=60) as client:
        for url in trainer.rollout_pool.urls:
            state = {}
            for name in full:
                response = client.post(f"{url}/get_weights_by_name", json={"name": name, "truncate_size": 1 << 30})
                response.raise_for_status()
                state[name] = torch.tensor(response.json(), dtype=torch.float32)
            states.append(state)
    return states, {name: t.to(torch.bfloat16).float() for name, t in full.items()}


async def run(model_dir: str, out: Path, ranks: int, replicas: int, steps: int, weight_sync: str,
              shared_dir: bool, rollout_mode: str = "sync") -> dict:
    cfg = arithmetic_config(model_dir, out.parent / "run", steps=steps, batch=2 * replicas, overrides=[
        "trainer.nnodes=1", f"trainer.n_gpus_per_node={ranks}", "actor_rollout_ref.rollout.placement=separate",
        "actor_rollout_ref.rollout.name=sglang", f"actor_rollout_ref.rollout.weight_sync={weight_sync}",
        f"actor_rollout_ref.rollout.n_gpus_per_node={replicas}",
        "actor_rollout_ref.rollout.update_weights_bucket_megabytes=1", f"trainer.rollout_mode={rollout_mode}",
    ])
    cfg.actor_rollout_ref.rollout.engine_kwargs["sglang"] = {"launch": {
        "command": [sys.executable, "-m", "tests.engines.sglang_test_server", "--model-path", "{model_path}",
                    "--host", "{host}", "--port", "{port}"],
        "env": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, "start_timeout_s": 300,
        "log_dir": str(out.parent / "server-logs")},
        # The two Ray "nodes" are one machine: its folders are shared with the "other" node's servers.
        **({"weight_sync_dir_shared": True} if shared_dir else {})}

    def inspect(trainer) -> dict:
        pool = trainer.rollout_pool
        servers = []
        for info in pool.infos:
            # (the local cluster's raylets are this driver's children, so the driver is further up the chain)
            servers.append({"pid": info["pid"], "actor_pid": info["actor_pid"], "driver_pid": os.getpid(),
                            "parent": psutil.Process(info["pid"]).ppid(), "url": info["url"]})
        return {"trainer_nodes": ray.get([a.node_id.remote() for a in trainer.workers.actors]),
                "replica_nodes": ray.get([a.node_id.remote() for a in pool.actors]),
                "actor_pids": ray.get([a.pid.remote() for a in pool.actors]), "servers": servers,
                "urls": pool.urls, "broadcast": pool.weight_group is not None,
                "requests_by_server": dict(trainer.rollout.engine.stats.requests_by_server),
                "plan": None if pool.plan is None else {"buckets": len(pool.plan.buckets)}}

    result = await fit_checked(cfg, rows=4 * replicas, replicas=lambda t: [], inspect=inspect, states=server_states)
    left = ray.util.placement_group_table()

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    import time

    deadline = time.monotonic() + 30
    while not all(gone(s["pid"]) for s in result["servers"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    weight_dirs = sorted(p.name for p in (out.parent / "run").glob("rollout-weights-*"))
    return {**result, "placement_groups_left": sum(1 for g in left.values() if g["state"] != "REMOVED"),
            "weight_dirs_left": weight_dirs,
            "servers_gone": [gone(s["pid"]) for s in result["servers"]]}


def main() -> int:
    parser = run_parser(ranks=1, steps=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--weight-sync", default="distributed", choices=["distributed", "disk"])
    parser.add_argument("--shared-dir", action="store_true", help="declare the disk path's folder shared")
    args = parser.parse_args()
    return run_on_two_nodes(args.ranks, args.replicas, lambda: run(args.model_dir, args.out, args.ranks,
                                                                   args.replicas, args.steps, args.weight_sync,
                                                                   args.shared_dir, args.rollout_mode),
                            args.out)


if __name__ == "__main__":
    sys.exit(main())
