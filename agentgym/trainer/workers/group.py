"""Worker groups: the same async calls on one in-process rank or on N Ray actors (one per device)."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from agentgym.config.schema import AgentGymConfig
from agentgym.errors import ConfigError
from agentgym.devices import device_type
from agentgym.trainer.workers.pools import PoolSpec, ResourcePool, check_pools_fit, plan_pools
from agentgym.trainer.workers.worker import TrainWorker


class LocalWorkerGroup:
    """A single rank in this process (no process group unless `distributed=True`, e.g. a 1-GPU FSDP run)."""

    # The rank shares the caller's process: exported weights are handed over by value, never by IPC handle.
    same_process = True

    def __init__(self, config: AgentGymConfig, *, total_steps: int, roles: tuple[str, ...] | None = None,
                 distributed: bool = False) -> None:
        self.world_size = 1
        self.on_gpu = device_type(config.trainer.device) == "cuda"
        self.worker = TrainWorker(config, 0, 1)
        init = f"tcp://{self.worker.address()}" if distributed else None
        self.worker.setup(init, total_steps, roles)

    async def call(self, method: str, per_rank: Sequence[tuple] | None = None, **kwargs: Any) -> list[Any]:
        args = per_rank[0] if per_rank else ()
        return [await asyncio.to_thread(getattr(self.worker, method), *args, **kwargs)]

    def shutdown(self) -> None:
        self.worker.shutdown()


class RayWorkerGroup:
    """`world_size` Ray actors, one per GPU (or per `cpus_per_worker` CPUs), joined into one process group
    (NCCL on GPU, gloo on CPU) whose rendezvous address rank 0 picks on its own node.

    The ranks live in their pool's placement group of one bundle per rank (`pools.ResourcePool`), packed onto as few
    nodes as fit, and are numbered node by node, so neighbouring ranks share a node (FSDP's shard groups, a
    replica's tensor-parallel peers)."""

    same_process = False

    def __init__(self, config: AgentGymConfig, world_size: int, *, total_steps: int,
                 roles: tuple[str, ...] | None = None, use_gpu: bool | None = None, cpus_per_worker: int = 1,
                 pool: ResourcePool | None = None) -> None:
        """`pool`: the reserved pool the ranks go on (`start_worker_group` reserves the trainer's from the pool
        plan); None reserves one of `world_size` bundles here."""
        import ray
        import torch

        from agentgym.trainer.workers.worker import ROLLOUT_GROUP

        if not ray.is_initialized():
            raise RuntimeError("Ray is not initialised; call ray.init() (or let the trainer do it) first")
        if use_gpu is None:
            use_gpu = pool.use_gpu if pool is not None else (config.trainer.device != "cpu" and torch.cuda.is_available())
        if pool is None:
            _check_cluster_fits(world_size, use_gpu, cpus_per_worker)
            spec = PoolSpec("trainer", (world_size,), ("actor_rollout",))
            pool = ResourcePool(spec, use_gpu=use_gpu, cpus_per_bundle=cpus_per_worker,
                                timeout_s=config.trainer.placement_timeout_s, tag=f"-{id(config):x}")
        elif pool.spec.size != world_size:
            raise ValueError(f"pool {pool.spec.name} holds {pool.spec.size} bundles for {world_size} ranks")
        self.config = config
        self.world_size = world_size
        self.on_gpu = use_gpu
        self.pool = pool
        self.placement_group = pool.placement_group
        # Ray starts actors with one intra-op thread; on CPU the ranks are the compute, so they share the node's cores.
        threads = cpus_per_worker if use_gpu else max(cpus_per_worker, int(ray.cluster_resources().get("CPU", 1)) // world_size)
        remote_cls = ray.remote(concurrency_groups={ROLLOUT_GROUP: max(config.actor_rollout_ref.rollout.max_num_seqs, 1)})(
            TrainWorker)
        self.actors = [
            remote_cls.options(num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0,
                               scheduling_strategy=pool.strategy(rank))
            .remote(config, rank, world_size, num_threads=threads)
            for rank in range(world_size)
        ]
        address = ray.get(self.actors[0].address.remote())
        init = f"tcp://{address}" if world_size > 1 or use_gpu else None
        ray.get([a.setup.remote(init, total_steps, roles) for a in self.actors])

    async def call(self, method: str, per_rank: Sequence[tuple] | None = None, **kwargs: Any) -> list[Any]:
        refs = [getattr(actor, method).remote(*(per_rank[r] if per_rank else ()), **kwargs)
                for r, actor in enumerate(self.actors)]
        return list(await asyncio.gather(*refs))

    def replica_handles(self) -> list[Any]:
        """The actor handles of the ranks that take requests, for engines that call their replicas
        (`agentgym.rollout.replicas`): every rank, or with `rollout.tensor_model_parallel_size` TP the first rank
        of each group of TP consecutive ranks (its replica's leader), world_size / TP replicas in all."""
        tp = self.config.actor_rollout_ref.rollout.tensor_model_parallel_size
        return list(self.actors[::tp])

    def shutdown(self) -> None:
        import ray

        try:
            ray.get([a.shutdown.remote() for a in self.actors])
        finally:
            for actor in self.actors:
                ray.kill(actor)
            self.pool.remove()


def _check_cluster_fits(world_size: int, use_gpu: bool, cpus_per_worker: int) -> None:
    """Ray would wait forever for actors the cluster cannot hold: say so instead."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    needed_cpus = world_size * cpus_per_worker
    if (use_gpu and gpus < world_size) or cpus < needed_cpus:
        have = f"{gpus} GPU(s) and {cpus} CPU(s)"
        want = f"{world_size} GPU(s)" if use_gpu else f"{needed_cpus} CPU(s) (no GPU is used)"
        raise ConfigError(
            f"trainer.nnodes * trainer.n_gpus_per_node = {world_size} trainer ranks need {want}, but the Ray "
            f"cluster has {have}.", entry="trainer.n_gpus_per_node",
            fix="set trainer.n_gpus_per_node (and trainer.nnodes) to the devices you have, or connect to a larger "
                "cluster with ray_kwargs.ray_init.address")


def _start_ray(config: AgentGymConfig) -> bool:
    """Connect to (or start) Ray as `ray_kwargs.ray_init` says; whether the ranks get GPUs."""
    import ray
    import torch

    if not ray.is_initialized():
        init = config.ray_kwargs.ray_init
        ray.init(num_cpus=init.num_cpus, address=init.address, include_dashboard=False)
    return config.trainer.device != "cpu" and torch.cuda.is_available()


def _pool_group(config: AgentGymConfig, spec: PoolSpec, roles: tuple[str, ...], *, use_gpu: bool,
                total_steps: int) -> RayWorkerGroup:
    """Reserve `spec`'s placement group and start one rank per bundle building `roles`; nothing is left reserved
    when a rank fails to start."""
    pool = ResourcePool(spec, use_gpu=use_gpu, timeout_s=config.trainer.placement_timeout_s, tag=f"-{id(config):x}")
    try:
        return RayWorkerGroup(config, spec.size, total_steps=total_steps, roles=roles, pool=pool)
    except BaseException:
        pool.remove()
        raise


def start_worker_group(config: AgentGymConfig, *, total_steps: int, roles: tuple[str, ...] | None = None):
    """The actor's ranks a run asks for: Ray actors on the actor's pool (starting a local Ray when none is
    connected), or one in-process rank. `roles` None: the models of every trainer role `trainer.mapping` puts on the
    actor's pool; a critic or reference mapped elsewhere is `start_role_groups`'s."""
    if config.trainer.use_ray:
        use_gpu = _start_ray(config)
        # Every pool of the run is checked against the cluster before anything is placed (a pool the cluster
        # cannot hold stops the run now, naming it); the trainer's pool is reserved here, the others by their roles.
        plan = plan_pools(config)
        check_pools_fit(plan, use_gpu)
        spec = plan.pool_of("actor_rollout")
        return _pool_group(config, spec, roles or spec.worker_roles, use_gpu=use_gpu, total_steps=total_steps)
    if config.trainer.resource_pool_spec is not None or config.trainer.mapping.critic or config.trainer.mapping.ref:
        plan_pools(config)  # a critic or reference mapped to a pool of its own needs Ray: say so by the key
    if config.world_size != 1:
        raise ConfigError(
            f"trainer.use_ray=false runs one rank but the config asks for {config.world_size}.",
            entry="trainer.n_gpus_per_node",
            fix="set trainer.use_ray=true or n_gpus_per_node=1",
        )
    # On a GPU the one rank still joins a 1-rank process group, so the model runs through FSDP2 (bf16 parameters
    # under its mixed-precision policy) as in a multi-GPU run, instead of fp32 weights under autocast.
    return LocalWorkerGroup(config, total_steps=total_steps, roles=roles,
                            distributed=device_type(config.trainer.device) == "cuda")


def start_role_groups(config: AgentGymConfig, *, total_steps: int) -> dict[str, RayWorkerGroup]:
    """The worker groups of the trainer roles `trainer.mapping` puts on a pool other than the actor's, by role
    ("ref", "critic"): one group per such pool, whose every rank builds all of that pool's roles (verl's resource-pool
    manager: the roles of one pool share its processes). Empty when every trainer role is on the actor's pool.

    Called after `start_worker_group`, which checked every pool against the cluster; each group has its own process
    group, so its collectives (FSDP's, the critic's gradient all-reduce) never wait on the actor's ranks."""
    if not config.trainer.use_ray:
        return {}
    plan = plan_pools(config)
    use_gpu = _start_ray(config)
    groups: dict[str, RayWorkerGroup] = {}
    try:
        for spec in plan.own_trainer_pools():
            group = _pool_group(config, spec, spec.worker_roles, use_gpu=use_gpu, total_steps=total_steps)
            groups.update({role: group for role in spec.worker_roles})
    except BaseException:
        for group in {id(g): g for g in groups.values()}.values():
            group.shutdown()
        raise
    return groups
