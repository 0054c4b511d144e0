"""One trainer rank: the models of its pool's roles (actor, reference, critic) on one device, plain or inside a Ray
actor."""

from __future__ import annotations

import os
import random
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist

from agentgym.config.schema import AgentGymConfig
from agentgym.devices import device_type, resolve_dtype
from agentgym.trainer.batching import MicroBatch
from agentgym.rollout.engines.weight_import import PackedWeights
from agentgym.trainer.workers.call_log import CallLog, CallSpan
from agentgym.trainer.workers.memory import PhaseMemory
from agentgym.rollout.engines.tensor_parallel import TensorParallel
from agentgym.trainer.workers.replica import ReplicaHost
from agentgym.trainer.workers.roles import PolicyRole, ValueRole
from agentgym.trainer.workers.weight_broadcast import BroadcastPlan, SyncGroup, plan_broadcast, send_weights
from agentgym.trainer.workers.weight_export import DEFAULT_BUCKET_BYTES, WeightExport, export_weights

# Ray concurrency group of the replica's calls: many model turns in flight at once, beside the training calls
# (which stay one at a time in the default group).
ROLLOUT_GROUP = "rollout"


def pick_device(preference: str) -> torch.device:
    if device_type(preference) == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but no CUDA device is visible; set trainer.device=cpu or auto")
    return torch.device("cuda", torch.cuda.current_device())


def free_address() -> str:
    """host:port on this node that rank 0 can listen on for the process-group rendezvous."""
    try:
        import ray

        host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
    except ImportError:
        host = "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"{host}:{port}"


class TrainWorker:
    """Holds this rank's models. Construction is cheap; `setup` joins the process group and loads models."""

    def __init__(self, config: AgentGymConfig, rank: int = 0, world_size: int = 1, *, num_threads: int | None = None):
        self.config = config
        self.rank = rank
        self.world_size = world_size
        if num_threads:
            torch.set_num_threads(num_threads)
        self.actor: PolicyRole | None = None
        self.ref: PolicyRole | None = None
        self.critic: ValueRole | None = None
        self._export: WeightExport | None = None
        self.replica: ReplicaHost | None = None
        self._sync_plan: BroadcastPlan | None = None  # separate rollout pool: the broadcast's layout
        self._sync_group: SyncGroup | None = None  # rank 0's group with the rollout pool's replicas
        self.memory: PhaseMemory | None = None
        self.roles: tuple[str, ...] = ()
        self.calls = CallLog()  # when this rank's forwards and updates ran (`call_spans`)

    def address(self) -> str:
        return free_address()

    def setup(self, init_method: str | None, total_steps: int, roles: tuple[str, ...] | None = None) -> dict:
        """Join the process group (when given a rendezvous) and build the models this run needs."""
        cfg = self.config
        self.device = pick_device(cfg.trainer.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.memory = PhaseMemory(self.device)
        if init_method is not None:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=init_method, rank=self.rank, world_size=self.world_size,
                                    timeout=timedelta(minutes=30))
        if roles is None:
            roles = ("actor",) + (("ref",) if cfg.use_reference else ()) + (("critic",) if cfg.use_critic else ())
        self.roles = tuple(roles)
        arr = cfg.actor_rollout_ref
        # Same seed everywhere: any freshly initialised weights (the critic's value head) match across ranks.
        torch.manual_seed(cfg.data.seed)
        if "actor" in roles:
            self.actor = PolicyRole(arr.model, arr.actor.fsdp_config, device=self.device, optim_cfg=arr.actor.optim,
                                    total_steps=total_steps, use_torch_compile=arr.actor.use_torch_compile)
        if "ref" in roles:
            self.ref = PolicyRole(arr.model, arr.ref.fsdp_config, device=self.device,
                                  use_torch_compile=arr.ref.use_torch_compile, fsdp_entry="actor_rollout_ref.ref.fsdp_config")
        if "critic" in roles:
            critic_model = cfg.critic.model
            if critic_model.path is None:
                critic_model = critic_model.model_copy(update={"path": arr.model.path})
            self.critic = ValueRole(critic_model, critic_model.fsdp_config, device=self.device,
                                    optim_cfg=cfg.critic.optim, total_steps=total_steps, value_head=True,
                                    fsdp_entry="critic.model.fsdp_config")
        return {"rank": self.rank, "device": str(self.device), "roles": list(roles)}

    # ---- forward passes ----
    def compute_log_prob(self, micro_batches: list[MicroBatch], role: str = "actor", with_entropy: bool = False):
        model = self.actor if role == "actor" else self.ref
        if model is None:
            raise RuntimeError(f"this worker has no {role} model; enable it in the config")
        temperature = self.config.actor_rollout_ref.rollout.temperature
        with self.calls.span(f"compute_log_prob:{role}"):
            return model.compute_log_prob(micro_batches, temperature=temperature, with_entropy=with_entropy)

    def compute_values(self, micro_batches: list[MicroBatch]) -> list[torch.Tensor]:
        critic = self._critic()
        with self.calls.span("compute_values"):
            return critic.compute_values(micro_batches)

    def _critic(self) -> ValueRole:
        if self.critic is None:
            raise RuntimeError(f"this worker ({'+'.join(self.roles)}) has no critic; enable it in the config "
                               "(critic.enable), or call the group trainer.mapping.critic places it in")
        return self.critic

    # ---- updates ----
    def _loss_scale_factor(self) -> float:
        factor = self.config.actor_rollout_ref.actor.loss_scale_factor
        return float(factor) if factor is not None else float(self.config.data.max_response_length)

    def update_actor(self, minibatches: list[list[MicroBatch]]) -> dict[str, list[float]]:
        cfg = self.config.actor_rollout_ref
        with self.calls.span("update_actor"), self.actor.optimizer_resident():
            return self.actor.update_policy(minibatches, cfg.actor, temperature=cfg.rollout.temperature,
                                            loss_scale_factor=self._loss_scale_factor())

    def update_critic(self, minibatches: list[list[MicroBatch]]) -> dict[str, list[float]]:
        c = self.config.critic
        actor = self.config.actor_rollout_ref.actor
        critic = self._critic()
        with self.calls.span("update_critic"), critic.optimizer_resident():
            return critic.update_critic(
                minibatches, c, loss_agg_mode=c.loss_agg_mode or actor.loss_agg_mode,
                ppo_epochs=c.ppo_epochs or actor.ppo_epochs, loss_scale_factor=self._loss_scale_factor(),
            )

    def update_sft(self, minibatches: list[list[MicroBatch]]) -> dict[str, list[float]]:
        with self.actor.optimizer_resident():
            return self.actor.update_sft(minibatches, self.config.actor_rollout_ref.actor.grad_clip)

    def optimizer_state_devices(self, role: str = "actor") -> dict[str, Any]:
        """Where the role's optimizer state is now, and whether it is offloaded (tests, diagnostics)."""
        model = getattr(self, role)
        offload = model.optimizer_offload
        devices = sorted(offload.state_devices()) if offload is not None else sorted(
            {str(v.device) for st in model.optimizer.state.values() for k, v in st.items()
             if isinstance(v, torch.Tensor) and k != "step"})
        return {"devices": devices, "offloaded": offload is not None and not offload.resident,
                "moves": offload.moves if offload is not None else 0}

    def actor_mesh_shape(self) -> list[int]:
        """The device mesh the actor's parameters are sharded over ([] unsharded; [world] FSDP; [replicas, shard
        group] HSDP)."""
        from torch.distributed.tensor import DTensor

        param = next(self.actor.model.parameters())
        return list(param.device_mesh.shape) if isinstance(param, DTensor) else []

    def call_spans(self) -> list[CallSpan]:
        """When this rank's recent forwards and updates started and ended, oldest first (`workers.call_log`)."""
        return self.calls.spans()

    # ---- memory per phase ----
    def memory_mark(self, phase: str) -> dict[str, float]:
        """This rank's memory figures for `phase`, which ends now (`workers.memory`)."""
        assert self.memory is not None
        return self.memory.mark(phase)

    # ---- weights and checkpoints ----
    def actor_state_dict(self, dtype: str | None = None) -> dict[str, torch.Tensor]:
        return self.actor.full_state_dict(resolve_dtype(dtype) if dtype else None)

    def probe_shared_dir(self, directory: str, token: str) -> dict[str, Any]:
        """Read the driver's probe file in `directory` and write this rank's (CheckpointManager.probe)."""
        answer: dict[str, Any] = {"rank": self.rank, "host": socket.gethostname(), "error": None}
        root = Path(directory)
        try:
            seen = (root / f".agentgym-probe-{token}").read_text()
            if seen != token:
                answer["error"] = f"{root} holds another run's probe file (read {seen[:40]!r})"
                return answer
            (root / f".agentgym-probe-{token}-rank{self.rank}").write_text(token)
        except OSError as exc:
            answer["error"] = f"{type(exc).__name__}: {exc}"
        return answer

    def export_weights(self, dtype: str | None = None, *, ipc: bool = False,
                       bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> PackedWeights | None:
        """The actor's full weights in device buckets (`weight_export`): rank 0 returns them, by value when the
        caller shares this process (`ipc=False`) or as CUDA IPC handles; other ranks take part and return None.
        The buckets stay allocated until `release_weights`."""
        self.release_weights()
        self._export = export_weights(self.actor.model, dtype=resolve_dtype(dtype) if dtype else None,
                                      bucket_bytes=bucket_bytes, keep=self.rank == 0)
        return self._export.share(ipc=ipc)

    def release_weights(self) -> None:
        """Free the buckets of the last `export_weights` (the receiver has copied them)."""
        self._export = None

    # ---- the colocated engine replica ----
    def start_replica(self, version: int = 0) -> dict:
        """Start this rank's engine replica (on this rank's device) and load the actor's current weights into it, as
        policy `version` (the trainer's: 0, or a resumed checkpoint's)."""
        if self.replica is None:
            tp_size = self.config.actor_rollout_ref.rollout.tensor_model_parallel_size
            # Collective over the trainer's ranks (every rank starts its replica at once): the replicas' groups.
            tp = TensorParallel.consecutive(tp_size, device=self.device) if tp_size > 1 else None
            self.replica = ReplicaHost(self.config, tensor_parallel=tp)
        return {"rank": self.rank, "device": str(self.device), "tensors": self.sync_replica(version)}

    @ray.method(concurrency_group=ROLLOUT_GROUP)
    def replica_generate(self, prompt_ids: list[int], sampling: Any, session_id: str | None = None,
                         images: Any = None) -> Any:
        if self.replica is None:
            raise RuntimeError(f"rank {self.rank} hosts no engine replica; the trainer starts one when "
                               "actor_rollout_ref.rollout.placement is colocated")
        return self.replica.generate(prompt_ids, sampling, session_id, images)

    def sync_replica(self, version: int | None = None) -> int:
        """Copy the actor's weights into this rank's replica as policy `version` (default: the replica's next),
        gathered from the shards bucket by bucket on this rank's device, in the engine's dtype (collective: every
        rank syncs together); then the replica takes back its KV cache if `release_replica_memory` freed it (after
        the sync, so the gathered buckets and the cache never hold the GPU at once)."""
        assert self.replica is not None and self.actor is not None
        dtype = getattr(torch, self.replica.engine.config.dtype)
        count = self.replica.load(self.actor.full_param_buckets(dtype), version)
        if self.replica.released:
            self.replica.resume()
        return count

    def release_replica_memory(self) -> bool:
        """Free the replica's KV cache (and decode graphs) for old log-probs and the update (the rollout of this
        step is over); `sync_replica` re-allocates it. Off with `rollout.free_cache_engine=false`. Returns whether
        it released."""
        if self.replica is None or not self.config.actor_rollout_ref.rollout.free_cache_engine:
            return False
        self.replica.release()
        assert self.memory is not None
        self.memory.reset()  # the next phase's peak starts without the cache
        return True

    @ray.method(concurrency_group=ROLLOUT_GROUP)
    def replica_counters(self) -> dict[str, float]:
        return self.replica.counters() if self.replica is not None else {}

    def replica_state_dict(self) -> dict[str, torch.Tensor]:
        assert self.replica is not None
        return self.replica.state_dict()

    def replica_shard_slices(self) -> dict[str, tuple[int, int, int]]:
        """Where this rank's shard of each split parameter sits in the full one ({}: the replica is whole here)."""
        assert self.replica is not None
        return self.replica.engine.shard_slices

    # ---- weight sync to a separate rollout pool (weight_broadcast) ----
    def weight_broadcast_plan(self, dtype: str | None, bucket_bytes: int) -> BroadcastPlan:
        """The layout of the actor's parameters in broadcast buckets, in the engines' `dtype`."""
        return plan_broadcast(self.actor.model, getattr(torch, dtype) if dtype else None, bucket_bytes)

    def join_weight_sync(self, address: str, world_size: int, plan: BroadcastPlan,
                         prefix: str | None = None) -> None:
        """Every rank keeps the plan; rank 0 joins the replicas' sync group (group rank 0), hosting its store at
        `address` (waits until every replica has joined). `prefix`: the group's store namespace (SGLang servers:
        their `group_name`)."""
        self._sync_plan = plan
        if self.rank == 0:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            extra = {"prefix": prefix} if prefix else {}
            self._sync_group = SyncGroup(address, 0, world_size, backend=backend, **extra)

    def broadcast_weights(self, per_tensor: bool = False) -> int:
        """One sync: every rank gathers the shards bucket by bucket, rank 0 broadcasts each bucket (or each of its
        tensors, for SGLang servers) to the replicas, which receive at the same time. Returns the tensors rank 0
        sent."""
        if self._sync_plan is None:
            raise RuntimeError("join_weight_sync was not called: no rollout pool to send the weights to")
        return send_weights(self.actor.model, self._sync_plan, self._sync_group, self.device, per_tensor=per_tensor)

    def save_checkpoint(self, directory: str, with_optimizer: bool = True) -> None:
        root = Path(directory)
        for name in ("actor", "critic"):
            role = getattr(self, name)
            if role is not None:
                with role.optimizer_resident():
                    role.save(root / name, with_optimizer=with_optimizer)
        rng = {
            "python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        torch.save(rng, root / self._rng_file())

    def load_checkpoint(self, directory: str, with_optimizer: bool = True) -> None:
        root = Path(directory)
        for name in ("actor", "critic"):
            role = getattr(self, name)
            if role is not None:
                with role.optimizer_resident():
                    role.load(root / name, with_optimizer=with_optimizer)
        rng_file = root / self._rng_file()
        if rng_file.exists():
            rng = torch.load(rng_file, weights_only=False)
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def _rng_file(self) -> str:
        """This rank's random-generator file: the actor's ranks keep the historical name; the ranks of a critic or
        reference group of its own (same rank numbers, same checkpoint folder) are named by their roles."""
        if self.actor is not None:
            return f"rng_rank{self.rank}.pt"
        return f"rng_{'+'.join(self.roles)}_rank{self.rank}.pt"

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def shutdown(self) -> None:
        if self._sync_group is not None:
            self._sync_group.close()
            self._sync_group = None
        if self.replica is not None:
            self.replica.close()
            self.replica = None
        if dist.is_initialized():
            dist.destroy_process_group()

    def pid(self) -> int:
        return os.getpid()

    def weights_read_from_disk(self) -> bool:
        """Whether this rank read the model's weight files (only rank 0 does when there are several)."""
        return any(role.read_from_disk for role in (self.actor, self.ref, self.critic) if role is not None)

    def node_id(self) -> str:
        """The Ray node this rank runs on ("local" outside Ray)."""
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
