"""A separate rollout pool (`actor_rollout_ref.rollout.placement=separate`): engine replicas as Ray actors on a
pool of their own devices, fed by the agent loops through the `ReplicaRouter` and synced from the trainer by a
collective broadcast (`weight_broadcast`).

Each `RolloutReplica` actor sits on one bundle of its pool's placement group (one GPU, or one CPU slot on a CPU
run) and runs the in-process engine there (`replica.ReplicaHost`, the same host the colocated ranks use). After
each update the trainer's ranks gather the actor's parameters bucket by bucket and trainer rank 0 broadcasts each
bucket, in the engines' dtype, to every replica over their own process group: nothing passes through the driver,
Ray's object store or the disk. The driver only starts the calls (and the layout is agreed once, at start).

With a server engine (`rollout.name=sglang|vllm`) each actor launches one server as its own child on its bundle's
GPU (`launch` settings of `engine_kwargs.<name>`; the kernel kills the server if the actor dies) and reports its
URL; the driver's HTTP engine routes over those URLs. Weights then go by `rollout.weight_sync`: `distributed`
(SGLang: trainer rank 0 and every server form one group through `/init_weights_update_group`, then each sync
posts `/update_weights_from_distributed` per bucket while rank 0 broadcasts each tensor: `servers.weight_group`)
or `disk` (safetensors in a folder every server reads, the driver engine's `update_weights`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import ray
import torch

from agentgym.config.schema import AgentGymConfig
from agentgym.errors import ConfigError
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
        self.launcher: Any = None  # a server engine: this actor's server (servers.launch.ServerLauncher)
        self._loop: asyncio.AbstractEventLoop | None = None  # the launcher's event loop, on a thread of its own

    def start(self) -> dict[str, Any]:
        """Load the engine on this actor's device (Ray made its bundle's GPU the only visible one), or launch this
        actor's server there."""
        if self.config.actor_rollout_ref.rollout.name in ("sglang", "vllm"):
            return self._start_server()
        if torch.cuda.is_available() and self.config.trainer.device != "cpu":
            torch.cuda.set_device(0)
        self.host = ReplicaHost(self.config)
        return {"index": self.index, "dtype": self.host.engine.config.dtype, "device": str(self.device),
                "node": ray.get_runtime_context().get_node_id()}

    def _start_server(self) -> dict[str, Any]:
        from agentgym.devices import resolve_dtype
        from agentgym.rollout.engines.servers.server_engines import pool_server_launcher

        gpus = [str(g) for g in ray.get_gpu_ids()]
        env = {"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else {}
        self.launcher = pool_server_launcher(self.config, ray.util.get_node_ip_address(), env)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="server-launcher", daemon=True).start()
        (url,) = self._on_loop(self.launcher.start())
        dtype = str(resolve_dtype(self.config.actor_rollout_ref.rollout.dtype)).removeprefix("torch.")
        return {"index": self.index, "dtype": dtype, "url": url, "pid": self.launcher.processes[0].pid,
                "actor_pid": os.getpid(), "gpus": gpus, "node": ray.get_runtime_context().get_node_id()}

    def _on_loop(self, coro: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

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

    def server_url(self) -> str:
        """The URL of the server this actor launched (a server engine)."""
        if self.launcher is None or not self.launcher.urls:
            raise RuntimeError(f"rollout actor {self.index} runs no server (rollout.name is an in-process engine)")
        return self.launcher.urls[0]

    def pid(self) -> int:
        return os.getpid()

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
        if self.launcher is not None and self._loop is not None:
            try:
                self._on_loop(self.launcher.stop())
            finally:
                self.launcher = None
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None


@dataclass
class RolloutPool:
    """The started replicas of the rollout pool, their placement group and the broadcast layout."""

    pool: ResourcePool
    actors: list[Any]
    plan: BroadcastPlan | None  # None: servers synced by the disk path (the driver engine's update_weights)
    urls: list[str] = field(default_factory=list)  # a server engine: the servers the actors launched
    infos: list[dict[str, Any]] = field(default_factory=list)  # what each actor's start() reported
    weight_group: Any = None  # servers synced by broadcast: servers.weight_group.SGLangWeightGroup

    @property
    def handles(self) -> list[Any]:
        """For `Rollout.start(replicas)`: handles with `replica_generate` and `replica_counters`, or (servers) the
        actors whose `server_url` the rollout's HTTP engine routes over."""
        return list(self.actors)

    @property
    def syncs_weights(self) -> bool:
        """Whether `sync` moves the weights (broadcast); False: the rollout's engine takes them by the disk path."""
        return self.plan is not None

    async def sync(self, workers: Any, version: int | None = None) -> int:
        """The actor's weights into every replica as policy `version`: the trainer ranks send (rank 0 broadcasts)
        while the replicas (or servers) receive. Returns the tensors each replica loaded."""
        if self.plan is None:
            raise RuntimeError("this rollout pool's servers take their weights by the disk path, not by broadcast")
        if self.weight_group is not None:
            from agentgym.rollout.engines.servers.weight_group import bucket_specs

            sent, _ = await asyncio.gather(workers.call("broadcast_weights", per_tensor=True),
                                           self.weight_group.update(bucket_specs(self.plan), int(version or 0)))
            return sent[0]
        sent, *received = await asyncio.gather(workers.call("broadcast_weights"),
                                               *(a.receive_weights.remote(version) for a in self.actors))
        if any(n != sent[0] for n in received):
            raise RuntimeError(f"weight sync: rank 0 sent {sent[0]} tensors but the replicas loaded {received}")
        return sent[0]

    def shutdown(self) -> None:
        try:
            if self.weight_group is not None:
                group, self.weight_group = self.weight_group, None
                try:
                    asyncio.get_running_loop()  # inside an event loop: leave the group unsaid, the servers stop below
                except RuntimeError:
                    asyncio.run(group.close())
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
        if "url" in infos[0]:
            return await _server_pool(config, workers, pool, actors, list(infos), dtypes.pop(), bucket_bytes,
                                      use_gpu, version)
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


def weight_sync_path(config: AgentGymConfig) -> str:
    """`rollout.weight_sync` resolved: `distributed` or `disk` (auto: distributed on a separate pool)."""
    rollout = config.actor_rollout_ref.rollout
    path = rollout.weight_sync
    if path == "auto":
        path = "distributed" if rollout.name != "vllm" else "disk"
    if path == "distributed" and rollout.name == "vllm":
        raise ConfigError("weight sync by broadcast is built for SGLang servers only; vLLM servers take weights "
                          "by the disk path.", entry="actor_rollout_ref.rollout.weight_sync",
                          fix="set actor_rollout_ref.rollout.weight_sync=disk (or auto) for vllm")
    return path


async def _server_pool(config: AgentGymConfig, workers: Any, pool: ResourcePool, actors: list[Any],
                       infos: list[dict[str, Any]], dtype: str, bucket_bytes: int, use_gpu: bool,
                       version: int) -> RolloutPool:
    """The pool's actors run servers: join them and trainer rank 0 into one group (distributed path) and load the
    trainer's weights into them, or leave the weights to the disk path (the caller syncs through the engine)."""
    urls = [info["url"] for info in infos]
    if weight_sync_path(config) == "disk":
        return RolloutPool(pool, actors, None, urls=urls, infos=infos)
    from agentgym.rollout.engines.servers.weight_group import SGLangWeightGroup

    rank0 = workers.actors[0]
    plan = await rank0.weight_broadcast_plan.remote(dtype, bucket_bytes)
    address = await rank0.address.remote()
    host, port = address.rsplit(":", 1)
    group = SGLangWeightGroup(urls, ranks_per_server=config.actor_rollout_ref.rollout.tensor_model_parallel_size)
    rollout_pool = RolloutPool(pool, actors, plan, urls=urls, infos=infos, weight_group=group)
    try:
        await asyncio.gather(
            workers.call("join_weight_sync", address=address, world_size=group.world_size, plan=plan,
                         prefix=group.group_name),
            group.init(host, int(port), "nccl" if use_gpu else "gloo"))
        await rollout_pool.sync(workers, version)
    except BaseException:
        await group.close()
        raise
    return rollout_pool
