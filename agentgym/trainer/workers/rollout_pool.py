"""A separate rollout pool (`actor_rollout_ref.rollout.placement=separate`): engine replicas as Ray actors on a
pool of their own devices, fed by the agent loops through the `ReplicaRouter` and synced from the trainer by a
collective broadcast (`weight_broadcast`).

Each `RolloutReplica` actor sits on one bundle of its pool's placement group (one GPU, or one CPU slot on a CPU
run) and runs the in-process engine there (`replica.ReplicaHost`, the same host the colocated ranks use). After
each update the trainer's ranks gather the actor's parameters bucket by bucket and trainer rank 0 broadcasts each
bucket, in the engines' dtype, to every replica over their own process group: nothing passes through the driver,
Ray's object store or the disk. The driver only starts the calls (and the layout is agreed once, at start).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import ray
import torch

from agentgym.config.schema import AgentGymConfig
from agentgym.rollout.engines.base import GenerateOutput, SamplingParams
from agentgym.trainer.workers.pools import ResourcePool, plan_pools
from agentgym.trainer.workers.replica import ReplicaHost
from agentgym.trainer.workers.weight_broadcast import BroadcastPlan, SyncGroup, receive_buckets


class RolloutReplica:
    """One engine replica on its own device, as a threaded Ray actor: many `replica_generate` calls in flight (each
    waits on the engine's event loop thread), and `receive_weights` during the sync."""

    def __init__(self, config: AgentGymConfig, index: int) -> None:
        self.config = config
        self.index = index
        self.host: ReplicaHost | None = None
        self._group: SyncGroup | None = None
        self._plan: BroadcastPlan | None = None

    def start(self) -> dict[str, Any]:
        """Load the engine on this actor's device (Ray made its bundle's GPU the only visible one)."""
        if torch.cuda.is_available() and self.config.trainer.device != "cpu":
            torch.cuda.set_device(0)
        self.host = ReplicaHost(self.config)
        return {"index": self.index, "dtype": self.host.engine.config.dtype, "device": str(self.device),
                "node": ray.get_runtime_context().get_node_id()}

    @property
    def device(self) -> torch.device:
        assert self.host is not None
        return next(self.host.engine.model.parameters()).device

    def join_weight_sync(self, address: str, rank: int, world_size: int, backend: str, plan: BroadcastPlan) -> None:
        self._plan = plan
        self._group = SyncGroup(address, rank, world_size, backend=backend)

    def receive_weights(self, version: int | None = None) -> int:
        """One sync as policy `version`: every bucket from trainer rank 0 into the engine, in place (the running
        calls finish first, new ones wait: `ReplicaHost.load`)."""
        if self._group is None or self._plan is None or self.host is None:
            raise RuntimeError(f"rollout replica {self.index} has not joined the weight sync")
        return self.host.load(receive_buckets(self._plan, self._group, self.device), version)

    def replica_generate(self, prompt_ids: list[int], sampling: SamplingParams, session_id: str | None = None,
                         images: Any = None) -> GenerateOutput:
        assert self.host is not None, "start() first"
        return self.host.generate(prompt_ids, sampling, session_id, images)

    def replica_counters(self) -> dict[str, float]:
        return self.host.counters() if self.host is not None else {}

    def replica_state_dict(self) -> dict[str, torch.Tensor]:
        assert self.host is not None
        return self.host.state_dict()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        if self._group is not None:
            self._group.close()
            self._group = None
        if self.host is not None:
            self.host.close()
            self.host = None


@dataclass
class RolloutPool:
    """The started replicas of the rollout pool, their placement group and the broadcast layout."""

    pool: ResourcePool
    actors: list[Any]
    plan: BroadcastPlan

    @property
    def handles(self) -> list[Any]:
        """For `Rollout.start(replicas)`: handles with `replica_generate` and `replica_counters`."""
        return list(self.actors)

    async def sync(self, workers: Any, version: int | None = None) -> int:
        """The actor's weights into every replica as policy `version`: the trainer ranks send (rank 0 broadcasts)
        while the replicas receive. Returns the tensors each replica loaded."""
        sent, *received = await asyncio.gather(workers.call("broadcast_weights"),
                                               *(a.receive_weights.remote(version) for a in self.actors))
        if any(n != sent[0] for n in received):
            raise RuntimeError(f"weight sync: rank 0 sent {sent[0]} tensors but the replicas loaded {received}")
        return sent[0]

    def shutdown(self) -> None:
        try:
            ray.get([a.close.remote() for a in self.actors], timeout=60)
        finally:
            for actor in self.actors:
                ray.kill(actor)
            self.pool.remove()


async def start_rollout_pool(config: AgentGymConfig, workers: Any, version: int = 0) -> RolloutPool:
    """Reserve the rollout pool, start one replica per bundle, join them and trainer rank 0 into one sync group
    (NCCL on GPUs, gloo on CPU) and load the trainer's current weights into every replica, as policy `version`.

    `workers`: the trainer's `RayWorkerGroup` (its ranks take part in every sync). Buckets hold about
    `rollout.update_weights_bucket_megabytes` each."""
    bucket_bytes = max(int(config.actor_rollout_ref.rollout.update_weights_bucket_megabytes * (1 << 20)), 1)
    spec = plan_pools(config).pool_of("rollout")
    use_gpu = workers.pool.use_gpu
    pool = await asyncio.to_thread(ResourcePool, spec, use_gpu=use_gpu,
                                   timeout_s=config.trainer.placement_timeout_s, tag=f"-{id(config):x}")
    actors: list[Any] = []
    try:
        remote = ray.remote(max_concurrency=max(config.actor_rollout_ref.rollout.max_num_seqs, 1) + 4)(RolloutReplica)
        actors = [remote.options(num_cpus=1, num_gpus=1 if use_gpu else 0, scheduling_strategy=pool.strategy(i))
                  .remote(config, i) for i in range(spec.size)]
        infos = await asyncio.gather(*(a.start.remote() for a in actors))
        dtypes = {info["dtype"] for info in infos}
        if len(dtypes) != 1:
            raise RuntimeError(f"the rollout replicas run in different dtypes {sorted(dtypes)}")
        rank0 = workers.actors[0]
        plan = await rank0.weight_broadcast_plan.remote(dtypes.pop(), bucket_bytes)
        address = await rank0.address.remote()
        world = len(actors) + 1
        backend = "nccl" if use_gpu else "gloo"
        await asyncio.gather(workers.call("join_weight_sync", address=address, world_size=world, plan=plan),
                             *(a.join_weight_sync.remote(address, i + 1, world, backend, plan)
                               for i, a in enumerate(actors)))
        rollout_pool = RolloutPool(pool, actors, plan)
        await rollout_pool.sync(workers, version)
        return rollout_pool
    except BaseException:
        for actor in actors:
            ray.kill(actor)
        pool.remove()
        raise
