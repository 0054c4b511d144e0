"""One GRPO step on 4 gloo ranks with fsdp_size=-1 (FSDP over all 4) and with fsdp_size=2 (HSDP: 2 replicas of
2-rank shard groups, optimizer state offloaded), the second also through the colocated weight sync and a checkpoint
round trip; prints what it saw as JSON.

    python tests/trainer/hsdp_run.py MODEL_DIR OUT_JSON

Its own process (run by tests/trainer/test_hsdp.py) so that its 4-CPU Ray runtime is its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import ray
import torch

from agentgym.config import load_config
from agentgym.trainer.driver import RLTrainer
from agentgym.trajectory import Trajectory


def trajectories() -> list[Trajectory]:
    """Four prompts x two samples, one rewarded per group; tool spans (mask 0) inside some responses."""
    rows = [([2, 3, 4], [5, 6, 7, 8], [1, 1, 1, 1]), ([2, 3, 4], [9, 10, 11], [1, 1, 1]),
            ([12, 13], [14, 15, 30, 31, 16, 17], [1, 1, 0, 0, 1, 1]), ([12, 13], [18, 19, 32, 20], [1, 1, 0, 1]),
            ([21, 22, 23], [24, 25], [1, 1]), ([21, 22, 23], [26, 27, 28], [1, 1, 1]),
            ([33, 34], [35, 36, 37, 38, 39], [1, 0, 0, 1, 1]), ([33, 34], [40, 41], [1, 1])]
    return [Trajectory(uid=f"t{i}", group_id=f"g{i // 2}", prompt_ids=p, response_ids=r, loss_mask=m,
                       rollout_logprobs=[0.0] * len(r), final_score=float(i % 2 == (i // 2) % 2))
            for i, (p, r, m) in enumerate(rows)]


def config(model_dir: str, *extra: str):
    return load_config(None, [
        f"actor_rollout_ref.model.path={model_dir}", "actor_rollout_ref.model.attn_implementation=eager",
        "trainer.device=cpu", "trainer.use_ray=true", "trainer.n_gpus_per_node=4", "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.optim.lr=1e-2",
        "actor_rollout_ref.actor.optim.weight_decay=0.0", "data.max_response_length=8",
        # Large Adam eps: the step is proportional to the gradient, so this compares gradients.
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.optim.eps=1.0",
        "actor_rollout_ref.actor.use_torch_compile=false", *extra])


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


async def run(model_dir: str) -> dict:
    out: dict = {}
    trajs = trajectories()
    trainer = RLTrainer(config(model_dir))
    trainer.start_workers()
    try:
        out["fsdp_mesh"] = (await trainer.workers.call("actor_mesh_shape"))[0]
        fsdp = await trainer.train_step(trajs)
        fsdp_weights = await trainer.actor_state_dict()
    finally:
        trainer.close()
    trainer = RLTrainer(config(model_dir, "actor_rollout_ref.actor.fsdp_config.fsdp_size=2",
                               "actor_rollout_ref.actor.fsdp_config.optimizer_offload=true"))
    trainer.start_workers()
    try:
        out["hsdp_mesh"] = (await trainer.workers.call("actor_mesh_shape"))[0]
        hsdp = await trainer.train_step(trajs)
        hsdp_weights = await trainer.actor_state_dict()
        out["weights_max_abs_diff"] = max_diff(hsdp_weights, fsdp_weights)
        out["metrics"] = {k: [fsdp[k], hsdp[k]] for k in ("actor/pg_loss", "actor/grad_norm")}
        out["offloaded"] = [d["offloaded"] for d in await trainer.workers.call("optimizer_state_devices")]
        # The colocated weight sync: every rank gathers the full parameters from its HSDP shards into its replica.
        await trainer.workers.call("start_replica")
        replicas = await trainer.workers.call("replica_state_dict")
        out["replicas_exact"] = [all(torch.equal(rep[k], v) for k, v in hsdp_weights.items()) for rep in replicas]
        # Checkpoint round trip: save, step again, load: the weights are the saved ones again and the run goes on.
        with tempfile.TemporaryDirectory() as tmp:
            await trainer.workers.call("save_checkpoint", directory=tmp)
            await trainer.train_step(trajs)
            moved = await trainer.actor_state_dict()
            await trainer.workers.call("load_checkpoint", directory=tmp)
            loaded = await trainer.actor_state_dict()
        out["second_step_moved"] = max_diff(moved, hsdp_weights)
        out["loaded_max_abs_diff"] = max_diff(loaded, hsdp_weights)
        again = await trainer.train_step(trajs)
        out["after_load_pg_loss"] = again["actor/pg_loss"]
    finally:
        trainer.close()
    return out


def main() -> int:
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        result = asyncio.run(run(model_dir))
    finally:
        ray.shutdown()
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
