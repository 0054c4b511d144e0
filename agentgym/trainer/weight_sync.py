"""How the actor's weights reach the rollout: the one place that picks the path from the rollout's placement.

- colocated: every trainer rank copies its own shards into the replica it hosts (`TrainWorker.sync_replica`);
- a separate pool: trainer rank 0 broadcasts to the pool's replicas, or the pool's servers read a safetensors copy
  from a shared folder (`workers.rollout_pool`);
- a rollout with its own engine (in this process or a server it launched): device buckets handed over by value or
  CUDA IPC handle (`workers.weight_export`), or a host state dict gathered on rank 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from agentgym.config.schema import AgentGymConfig
from agentgym.devices import device_type
from agentgym.rollout.engines.weight_import import WeightMappingError
from agentgym.rollout.protocol import Rollout
from agentgym.utils.console import say

WeightTransport = Literal["auto", "device", "state_dict"]


class WeightSync:
    """`transport` matters only to a rollout with its own engine. "device": buckets on the trainer's device, so the
    engine copies device to device; "state_dict": rank 0's host memory (CPU runs, engines on another machine);
    "auto": "device" on GPU runs that can reach the trainer's GPU memory. A device hand-over the engine cannot map
    switches the run to the host path, said once.

    `workers` is read when called: the trainer starts its ranks after building this."""

    def __init__(self, config: AgentGymConfig, workers: Callable[[], Any], transport: WeightTransport = "auto") -> None:
        if transport not in ("auto", "device", "state_dict"):
            raise ValueError(f"weight_transport must be 'auto', 'device' or 'state_dict', got {transport!r}")
        self.config = config
        self.transport: WeightTransport = transport
        self._workers = workers
        self.pool: Any = None  # rollout.placement=separate: workers.rollout_pool.RolloutPool

    async def actor_state_dict(self, dtype: str | None = None) -> dict[str, torch.Tensor]:
        return (await self._workers().call("actor_state_dict", dtype=dtype))[0]

    async def start(self, rollout: Rollout, version: int) -> None:
        """Start the replicas the ranks host (colocated: each loads the actor's weights) or the separate pool, and
        hand them to the rollout; a rollout with its own engine gets none, and the actor's weights."""
        workers = self._workers()
        if self.config.colocated_rollout:
            await workers.call("start_replica", version=version)
            await rollout.start(workers.replica_handles())
        elif self.config.separate_rollout:
            from agentgym.trainer.workers.rollout_pool import start_rollout_pool

            self.pool = await start_rollout_pool(self.config, workers, version)
            await rollout.start(self.pool.handles)
            if not self.pool.syncs_weights:  # servers on the disk path: the engine takes the weights
                await self.sync(rollout, version)
        else:
            await rollout.start(())
            await self.sync(rollout, version)

    async def release_memory(self) -> None:
        """Colocated: the ranks' replicas free their KV caches now the step's rollout is over (they take them back
        in `sync`); `rollout.free_cache_engine=false` keeps them."""
        if self.config.colocated_rollout and self.config.actor_rollout_ref.rollout.free_cache_engine:
            await self._workers().call("release_replica_memory")

    async def sync(self, rollout: Rollout | None, version: int) -> None:
        """The actor's weights into the rollout's engines as `version` (replicas version their own calls by it),
        waiting until they have them."""
        workers = self._workers()
        if self.config.colocated_rollout:
            await workers.call("sync_replica", version=version)  # inside each rank, from its shards
            return
        if self.pool is not None and self.pool.syncs_weights:
            await self.pool.sync(workers, version)  # rank 0 broadcasts to the rollout pool
            return
        if rollout is None:
            return
        if self.pool is not None:  # its servers on the disk path: written in the servers' dtype
            await rollout.update_weights(await self.actor_state_dict(self.config.actor_rollout_ref.rollout.dtype))
            return
        if not self._device_transport(workers):
            await rollout.update_weights(await self.actor_state_dict())
            return
        mp = self.config.actor_rollout_ref.actor.fsdp_config.mixed_precision
        packed = (await workers.call("export_weights", dtype=mp.param_dtype if mp is not None else None,
                                     ipc=not workers.same_process))[0]
        try:
            await rollout.update_weights(packed)
        except WeightMappingError as exc:
            say(f"weights cannot go to the rollout through GPU memory ({exc}); using the host path from now on")
            self.transport = "state_dict"
            await rollout.update_weights(await self.actor_state_dict())
        finally:
            packed.close()
            await workers.call("release_weights")

    def _device_transport(self, workers: Any) -> bool:
        """auto: on GPU runs, when the engine can reach the trainer's GPU memory: the rank shares this process, or
        this process sees a GPU (Ray workers on this machine hand over CUDA IPC handles)."""
        if self.transport != "auto":
            return self.transport == "device"
        if device_type(self.config.trainer.device) != "cuda":
            return False
        return workers.same_process or torch.cuda.is_available()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
