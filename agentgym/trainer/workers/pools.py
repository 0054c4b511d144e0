"""Resource pools: the roles of a run (actor+rollout, critic, reference, reward model, separate rollout replicas)
mapped onto named pools of Ray placement-group bundles, as verl's `ResourcePoolManager(resource_pool_spec,
mapping)` does.

A pool is `[gpus on node 1, gpus on node 2, ...]` (`trainer.resource_pool_spec`, verl's shape); each role names
its pool in `trainer.mapping`. Roles on one pool share its devices (colocated); a role on a pool of its own gets
other devices (separate). As in verl, the trainer roles of one pool (actor, reference, critic) live side by side in
each rank of that pool's one worker group: a critic or reference mapped away from the actor gets a worker group of
its own on its pool (`group.start_role_groups`). Each pool the trainer starts actors on is one Ray placement group of one bundle per GPU
(one CPU slot on a CPU run), packed onto as few nodes as fit, with its actors numbered node by node.

Why check before reserving: Ray waits forever for a placement group the cluster cannot hold. The plan of every
pool is checked against the live nodes first, and what is missing is said at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentgym.config.schema import AgentGymConfig
from agentgym.errors import ConfigError

GLOBAL_POOL = "global_pool"
ROLLOUT_POOL = "rollout_pool"
REWARD_POOL = "reward_pool"
# The models a trainer rank builds (TrainWorker's roles), by the mapping's role names, in the order it builds them.
WORKER_ROLES = {"actor_rollout": "actor", "ref": "ref", "critic": "critic"}


@dataclass(frozen=True)
class PoolSpec:
    """One named pool: devices per node (one entry per node) and the roles that run on it."""

    name: str
    per_node: tuple[int, ...]
    roles: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(self.per_node)

    @property
    def worker_roles(self) -> tuple[str, ...]:
        """The models each trainer rank on this pool builds (`TrainWorker.setup`'s roles); () for a pool of no
        trainer role (rollout replicas, a reward model)."""
        return tuple(worker for role, worker in WORKER_ROLES.items() if role in self.roles)


@dataclass(frozen=True)
class PoolPlan:
    """Every pool of a run, and which pool each role runs on."""

    pools: dict[str, PoolSpec]
    role_pool: dict[str, str]

    def pool_of(self, role: str) -> PoolSpec:
        return self.pools[self.role_pool[role]]

    def own_trainer_pools(self) -> list[PoolSpec]:
        """The pools other than the actor's that hold trainer roles: a critic or reference on devices of its own."""
        actor = self.role_pool["actor_rollout"]
        return [p for name, p in self.pools.items() if name != actor and p.worker_roles]


def plan_pools(config: AgentGymConfig) -> PoolPlan:
    """The run's pools from `trainer.resource_pool_spec` and `trainer.mapping`, with the defaults filled in:
    `global_pool` = `[n_gpus_per_node] * nnodes` for the trainer's roles, `rollout_pool` =
    `[rollout.n_gpus_per_node] * rollout.nnodes` for separate replicas, `reward_pool` for a reward model with
    `reward_model.enable_resource_pool`. A mapping this trainer cannot run is a ConfigError naming the key."""
    t, rollout, rm = config.trainer, config.actor_rollout_ref.rollout, config.reward_model
    mapping = t.mapping
    role_pool: dict[str, str] = {"actor_rollout": mapping.actor_rollout or GLOBAL_POOL}
    actor_pool = role_pool["actor_rollout"]
    defaults: dict[str, list[int]] = {actor_pool: [t.n_gpus_per_node] * t.nnodes}
    for role, used in (("critic", config.use_critic), ("ref", config.use_reference)):
        name = getattr(mapping, role)
        if used:
            role_pool[role] = name or actor_pool
        if used and role_pool[role] != actor_pool and not t.use_ray:
            raise ConfigError(
                f"trainer.mapping.{role}={name} puts the {role} on a pool other than the actor's ({actor_pool}), "
                "which runs it in Ray actors of its own, but trainer.use_ray=false runs one in-process rank.",
                entry=f"trainer.mapping.{role}", fix=f"set trainer.use_ray=true, or map the {role} to {actor_pool}")
    if config.separate_rollout:
        role_pool["rollout"] = mapping.rollout or ROLLOUT_POOL
        defaults.setdefault(ROLLOUT_POOL, [rollout.n_gpus_per_node] * rollout.nnodes)
        if role_pool["rollout"] == actor_pool:
            raise ConfigError(
                f"trainer.mapping.rollout={actor_pool} is the trainer's own pool: replicas on the trainer's devices "
                "are the colocated placement.", entry="trainer.mapping.rollout",
                fix="set actor_rollout_ref.rollout.placement=colocated, or map the rollout to a pool of its own")
    elif mapping.rollout is not None:
        raise ConfigError("trainer.mapping.rollout names a pool but the rollout is not on a separate pool.",
                          entry="trainer.mapping.rollout",
                          fix="set actor_rollout_ref.rollout.placement=separate, or leave the key out")
    if rm.enable and (rm.enable_resource_pool or mapping.reward_model):
        role_pool["reward_model"] = mapping.reward_model or REWARD_POOL
        if rm.enable_resource_pool:
            defaults.setdefault(REWARD_POOL, [rm.n_gpus_per_node] * rm.nnodes)
    # A default pool under its default name only: a role mapped to another name needs it in the spec.
    spec = {**{k: v for k, v in defaults.items() if k in role_pool.values()}, **(t.resource_pool_spec or {})}
    for role, name in role_pool.items():
        if name not in spec:
            raise ConfigError(f"trainer.mapping.{role}={name} names a pool that trainer.resource_pool_spec does not "
                              f"define (it defines {sorted(spec)}).", entry="trainer.resource_pool_spec",
                              fix=f"add {name}: [gpus per node, ...] to it, or map {role} to one of those")
    unused = sorted(set(spec) - set(role_pool.values()))
    if unused:
        raise ConfigError(f"trainer.resource_pool_spec defines {unused} but no role maps to it.",
                          entry="trainer.mapping", fix="map a role to it in trainer.mapping, or remove it")
    for name, per_node in spec.items():
        if name == REWARD_POOL and not per_node and t.resource_pool_spec is None:
            raise ConfigError("reward_model.enable_resource_pool=true gives the reward model no GPUs.",
                              entry="reward_model.n_gpus_per_node",
                              fix="set reward_model.nnodes and reward_model.n_gpus_per_node to at least 1")
        if not per_node or any(n < 1 for n in per_node):
            raise ConfigError(f"pool {name} = {per_node}: each node's entry must be at least 1 device.",
                              entry=f"trainer.resource_pool_spec.{name}", fix="list one positive count per node")
    trainer_size = spec[actor_pool]
    if sum(trainer_size) != config.world_size:
        raise ConfigError(
            f"the trainer's pool {actor_pool} = {trainer_size} holds {sum(trainer_size)} ranks but "
            f"trainer.nnodes x trainer.n_gpus_per_node = {config.world_size}.",
            entry=f"trainer.resource_pool_spec.{actor_pool}",
            fix="make them agree (the trainer's pool is [n_gpus_per_node] * nnodes)")
    roles_by_pool: dict[str, list[str]] = {}
    for role, name in role_pool.items():
        roles_by_pool.setdefault(name, []).append(role)
    for name, roles in roles_by_pool.items():
        trainer_roles = [r for r in roles if r in ("critic", "ref")]
        others = [r for r in roles if r in ("rollout", "reward_model")]
        if name != actor_pool and trainer_roles and others:
            raise ConfigError(
                f"trainer.mapping puts {'+'.join(trainer_roles)} and {'+'.join(others)} on one pool ({name}); a "
                "critic or reference shares devices only with the actor (each pool of its own is one placement "
                "group for one worker group).", entry=f"trainer.mapping.{trainer_roles[0]}",
                fix=f"map {trainer_roles[0]} to {actor_pool}, or to a pool of its own in trainer.resource_pool_spec")
    pools = {name: PoolSpec(name, tuple(per_node), tuple(roles_by_pool[name])) for name, per_node in spec.items()}
    return PoolPlan(pools, role_pool)


def live_node_capacity(use_gpu: bool) -> list[int]:
    """Devices (GPUs, or CPUs on a CPU run) of each live Ray node, largest first."""
    import ray

    kind = "GPU" if use_gpu else "CPU"
    return sorted((int(n["Resources"].get(kind, 0)) for n in ray.nodes() if n.get("Alive")), reverse=True)


def check_pools_fit(plan: PoolPlan, use_gpu: bool, nodes: list[int] | None = None) -> None:
    """Stop now, naming what is missing, when the live nodes cannot hold every pool node entry by entry (each
    entry on one node, first-fit over the nodes, largest entries first)."""
    capacity = list(live_node_capacity(use_gpu) if nodes is None else nodes)
    kind = "GPU" if use_gpu else "CPU slot"
    # On CPU the reward model's workers ask Ray for no CPU (they share the trainer's nodes): its pool takes no slot.
    pools = [p for p in plan.pools.values() if use_gpu or p.roles != ("reward_model",)]
    entries = sorted(((n, pool.name) for pool in pools for n in pool.per_node), reverse=True)
    left = list(capacity)
    unplaced: list[tuple[int, str]] = []
    for count, name in entries:
        for i, free in enumerate(left):
            if free >= count:
                left[i] -= count
                break
        else:
            unplaced.append((count, name))
    if not unplaced:
        return
    asked = ", ".join(f"{p.name} {list(p.per_node)} ({'+'.join(p.roles)})" for p in pools)
    missing = ", ".join(f"{name}'s node of {count} {kind}(s)" for count, name in unplaced)
    total = sum(p.size for p in pools)
    raise ConfigError(
        f"the pools ask for {total} {kind}(s): {asked}; the Ray cluster's live nodes have {capacity} {kind}(s) "
        f"each, so {missing} cannot be placed (short by {sum(c for c, _ in unplaced)} {kind}(s)).",
        entry="trainer.resource_pool_spec",
        fix="ask for fewer devices (trainer.nnodes x trainer.n_gpus_per_node, rollout.nnodes x "
            "rollout.n_gpus_per_node, trainer.resource_pool_spec), or connect to a larger cluster with "
            "ray_kwargs.ray_init.address")


class ResourcePool:
    """One pool's placement group (one bundle per device, PACK) and its bundles in node-by-node order."""

    def __init__(self, spec: PoolSpec, *, use_gpu: bool, cpus_per_bundle: int = 1, timeout_s: float = 60.0,
                 tag: str = "") -> None:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        self.spec = spec
        self.use_gpu = use_gpu
        self.bundle = {"CPU": cpus_per_bundle, **({"GPU": 1} if use_gpu else {})}
        bundles = [dict(self.bundle) for _ in range(spec.size)]
        self.placement_group = placement_group(bundles, strategy="PACK", name=f"agentgym-{spec.name}{tag}")
        try:
            ray.get(self.placement_group.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.placement_group)
            per_node = [{k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU")}
                        for n in ray.nodes() if n.get("Alive")]
            raise ConfigError(
                f"pool {spec.name} ({'+'.join(spec.roles)}): {spec.size} bundles {self.bundle} could not be placed "
                f"within {timeout_s:g} s; the cluster's live nodes offer {per_node} (less what other jobs and "
                "pools hold).", entry="trainer.resource_pool_spec",
                fix="ask for fewer devices, free the resources, or add nodes") from None
        self.order = bundles_by_node(self.placement_group)

    def strategy(self, index: int) -> Any:
        """The scheduling strategy that puts actor `index` (node-by-node order) on its bundle."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=self.order[index])

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.placement_group)


def bundles_by_node(group: Any) -> list[int]:
    """Bundle indices ordered node by node (actors 0..k-1 on the first node, ...), in bundle order within a node."""
    from ray.util.placement_group import placement_group_table

    nodes = placement_group_table(group)["bundles_to_node_id"]
    node_order: dict[str, int] = {}
    for bundle in sorted(nodes):
        node_order.setdefault(nodes[bundle], len(node_order))
    return sorted(nodes, key=lambda b: (node_order[nodes[b]], b))
