"""An engine replica inside a trainer rank (the colocated "hybrid engine"): the rank's own in-process engine on the
rank's own device, fed by the agent loops over Ray and synced from the rank's own shards.

The engine is asyncio-based; a trainer rank is a threaded Ray actor. So the engine lives on an event loop in a
thread of its own, and each `generate` call (one Ray call per model turn, many in flight) hands its coroutine to
that loop. Weight sync gathers the actor's parameters bucket by bucket on the rank's device and copies them into
the engine in place: nothing goes through rank 0, the CPU, the driver, Ray's object store or the disk. Each
load is a policy version; the host's own `PolicyVersionGate` pauses the calls that reach it during a load and stamps
every output with the version that produced it, so episodes in agent-worker actors record exact versions too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from agentgym.config.schema import AgentGymConfig
from agentgym.rollout.engines.base import GenerateOutput, SamplingParams
from agentgym.rollout.engines.in_process import InProcessEngine
from agentgym.rollout.engines.tensor_parallel import TensorParallel
from agentgym.rollout.policy_version import PolicyVersionGate


def replica_engine(cfg: AgentGymConfig, tensor_parallel: TensorParallel | None = None) -> InProcessEngine:
    """The in-process engine a rank hosts: the config's engine, on the rank's device, leaving the rank's thread
    count alone (the trainer owns it); with `tensor_parallel`, this rank's shard of its group's replica."""
    from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine
    from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
    from agentgym.rollout.engines.registry import in_process_engine_config

    engine_cfg = dataclasses.replace(in_process_engine_config(cfg), intra_op_threads=None)
    path = cfg.actor_rollout_ref.model.path
    if isinstance(engine_cfg, PagedEngineConfig):
        return PagedEngine(path, engine_cfg, tensor_parallel=tensor_parallel)
    return DynamicCacheEngine(path, engine_cfg, tensor_parallel=tensor_parallel)


class ReplicaHost:
    """Owns the replica and its event loop thread; every method is called from the rank's Ray threads. With
    `tensor_parallel` the engine is this rank's shard of a replica spanning its group: the leader's host takes the
    requests, the others' engines follow its steps (and refuse requests); every rank loads its own slice of the
    weights."""

    def __init__(self, cfg: AgentGymConfig, tensor_parallel: TensorParallel | None = None):
        self.engine = replica_engine(cfg, tensor_parallel)
        # Where the engine calls land, so the policy version of each is exact whoever sent it (docs/async.md).
        self.gate = PolicyVersionGate()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="agentgym-replica", daemon=True)
        self._thread.start()
        self._run(self.engine.start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def generate(self, prompt_ids: list[int], sampling: SamplingParams, session_id: str | None = None,
                 images: Any = None) -> GenerateOutput:
        """One engine call, stamped with the policy version of the weights that produced it."""
        return self._run(self._generate(prompt_ids, sampling, session_id, images))

    async def _generate(self, prompt_ids: list[int], sampling: SamplingParams, session_id: str | None,
                        images: Any) -> GenerateOutput:
        async with self.gate.generation() as version:
            out = await self.engine.generate(prompt_ids, sampling, session_id=session_id, images=images)
        return out._replace(policy_version=version)

    @property
    def version(self) -> int:
        return self.gate.version

    def load(self, buckets: Iterable[Mapping[str, torch.Tensor]], version: int | None = None) -> int:
        """One weight update from `buckets` (produced lazily: a trainer's collective gathers run as they are read),
        as policy `version` (default: the next one). The replica's own gate pauses the calls that reach it, from
        the driver or any agent worker: the running ones finish on the old weights, new ones wait for the new."""
        return self._run(self._load(buckets, self.gate.version + 1 if version is None else version))

    async def _load(self, buckets: Iterable[Mapping[str, torch.Tensor]], version: int) -> int:
        async with self.gate.weight_sync(version):
            return await self.engine.update_weights_from_buckets(buckets)

    @property
    def released(self) -> bool:
        return self.engine.released

    def release(self) -> None:
        """Free the engine's KV cache (and CUDA-graph pools) while the trainer updates (`engine.release_memory_occupation`)."""
        self._run(self.engine.release_memory_occupation())

    def resume(self) -> None:
        self._run(self.engine.resume_memory_occupation())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The replica's weights (this rank's shards with tensor parallelism), copied to the CPU (tests compare
        them with the trainer's)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.engine.model.state_dict().items()}

    def counters(self) -> dict[str, float]:
        return dict(self.engine.stats.counters())

    def close(self) -> None:
        try:
            self._run(self.engine.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
