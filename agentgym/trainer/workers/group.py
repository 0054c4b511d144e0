"""Worker groups: the same async calls on one in-process rank or on N Ray actors (one per device)."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from agentgym.config.schema import AgentGymConfig
from agentgym.errors import ConfigError
from agentgym.devices import device_type
from agentgym.trainer.workers.worker import TrainWorker


class LocalWorkerGroup:
    """A single rank in this process (no process group unless `distributed=True`, e.g. a 1-GPU FSDP run)."""

    # The rank shares the caller's process: exported weights are handed over by value, never by IPC handle.
    same_process = True

    def __init__(self, config: AgentGymConfig, *, total_steps: int, roles: tuple[str, ...] | None = None,
                 distributed: bool = False) -> None:
        self.world_size = 1
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

    The ranks live in one placement group of one bundle per rank, packed onto as few nodes as fit, and are numbered
    node by node, so neighbouring ranks share a node (FSDP's shard groups, a replica's tensor-parallel peers)."""

    same_process = False

    def __init__(self, config: AgentGymConfig, world_size: int, *, total_steps: int,
                 roles: tuple[str, ...] | None = None, use_gpu: bool | None = None, cpus_per_worker: int = 1) -> None:
        import ray
        import torch
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from agentgym.trainer.workers.worker import ROLLOUT_GROUP

        if not ray.is_initialized():
            raise RuntimeError("Ray is not initialised; call ray.init() (or let the trainer do it) first")
        if use_gpu is None:
            use_gpu = config.trainer.device != "cpu" and torch.cuda.is_available()
        _check_cluster_fits(world_size, use_gpu, cpus_per_worker)
        self.world_size = world_size
        bundle = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
        self.placement_group = _reserve(config, [dict(bundle) for _ in range(world_size)])
        order = _bundles_by_node(self.placement_group)
        # Ray starts actors with one intra-op thread; on CPU the ranks are the compute, so they share the node's cores.
        threads = cpus_per_worker if use_gpu else max(cpus_per_worker, int(ray.cluster_resources().get("CPU", 1)) // world_size)
        remote_cls = ray.remote(concurrency_groups={ROLLOUT_GROUP: max(config.actor_rollout_ref.rollout.max_num_seqs, 1)})(
            TrainWorker)
        self.actors = [
            remote_cls.options(num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0,
                               scheduling_strategy=PlacementGroupSchedulingStrategy(
                                   self.placement_group, placement_group_bundle_index=order[rank]))
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
        """The ranks' actor handles, for engines that call their replicas (`agentgym.rollout.replicas`)."""
        return list(self.actors)

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        try:
            ray.get([a.shutdown.remote() for a in self.actors])
        finally:
            for actor in self.actors:
                ray.kill(actor)
            remove_placement_group(self.placement_group)


def _reserve(config: AgentGymConfig, bundles: list[dict[str, float]]) -> Any:
    """A placement group of `bundles`, packed onto as few nodes as fit; a cluster that cannot hold it is an error
    naming what is missing, at once, instead of a wait for resources that never come."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group(bundles, strategy="PACK", name=f"agentgym-trainer-{id(config):x}")
    try:
        ray.get(group.ready(), timeout=config.trainer.placement_timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        per_node = [{k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU")}
                    for n in ray.nodes() if n.get("Alive")]
        raise ConfigError(
            f"the trainer's {len(bundles)} ranks, one bundle {bundles[0]} each, could not be placed within "
            f"{config.trainer.placement_timeout_s:g} s; the cluster's live nodes offer {per_node} (less what other "
            f"jobs hold).", entry="trainer.n_gpus_per_node",
            fix="ask for fewer ranks (trainer.nnodes x trainer.n_gpus_per_node), free the resources, or add nodes") from None
    return group


def _bundles_by_node(group: Any) -> list[int]:
    """Bundle indices ordered node by node (ranks 0..k-1 on the first node, ...), in bundle order within a node."""
    from ray.util.placement_group import placement_group_table

    nodes = placement_group_table(group)["bundles_to_node_id"]
    node_order: dict[str, int] = {}
    for bundle in sorted(nodes):
        node_order.setdefault(nodes[bundle], len(node_order))
    return sorted(nodes, key=lambda b: (node_order[nodes[b]], b))


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


def start_worker_group(config: AgentGymConfig, *, total_steps: int, roles: tuple[str, ...] | None = None):
    """The ranks a run asks for: Ray actors (starting a local Ray when none is connected) or one in-process rank."""
    if config.trainer.use_ray:
        import ray

        if not ray.is_initialized():
            init = config.ray_kwargs.ray_init
            ray.init(num_cpus=init.num_cpus, address=init.address, include_dashboard=False)
        return RayWorkerGroup(config, config.world_size, total_steps=total_steps, roles=roles)
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
