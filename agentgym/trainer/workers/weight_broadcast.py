"""Weight sync to a separate rollout pool: a collective broadcast from trainer rank 0 to every replica actor.

Why a broadcast of its own: replicas on other GPUs (or nodes) cannot take the trainer's buffers in place (the
colocated path) nor CUDA IPC handles (same machine only), and the host path (a state dict through the driver and
Ray's object store, or files on a shared disk) costs a copy of the model per step through one process. Here
trainer rank 0 and the R replicas form one process group of their own (NCCL on GPUs, gloo on CPU; rank 0 the
trainer, ranks 1..R the replicas), created from a TCP store that rank 0 hosts, apart from the trainer's own
process group. Each sync, every trainer rank gathers the actor's parameters from the FSDP shards bucket by
bucket (cast to the engine's dtype first: a bf16 gather moves half the bytes of an fp32 one), rank 0 packs each
bucket into one flat buffer on its device and broadcasts it, and every replica receives into a buffer of the same
layout on its device and copies the views into its engine in place. The layout (names, shapes, offsets) is fixed
for a run and agreed once at join time; only the flat buffers move per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from agentgym.rollout.engines.weight_import import BucketEntry

DEFAULT_BROADCAST_BUCKET_BYTES = 256 << 20


@dataclass(frozen=True)
class BroadcastBucket:
    dtype: str  # torch dtype name without the "torch." prefix ("bfloat16")
    numel: int
    entries: tuple[BucketEntry, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class BroadcastPlan:
    """The layout of every sync: which parameter goes where in which flat bucket."""

    buckets: tuple[BroadcastBucket, ...]

    @property
    def nbytes(self) -> int:
        return sum(b.numel * torch.empty(0, dtype=b.torch_dtype).element_size() for b in self.buckets)


def plan_broadcast(model: nn.Module, dtype: torch.dtype | None,
                   bucket_bytes: int = DEFAULT_BROADCAST_BUCKET_BYTES) -> BroadcastPlan:
    """Buckets of about `bucket_bytes` over `model.named_parameters()` (full shapes: a DTensor's shape is the
    global one), floating-point ones cast to `dtype`. Every trainer rank computes the same plan from the same model."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    buckets: list[BroadcastBucket] = []
    entries: list[BucketEntry] = []
    current: torch.dtype | None = None
    numel = 0

    def close() -> None:
        nonlocal entries, numel
        if entries:
            buckets.append(BroadcastBucket(str(current).removeprefix("torch."), numel, tuple(entries)))
        entries, numel = [], 0

    for name, param in model.named_parameters():
        target = dtype if dtype is not None and param.dtype.is_floating_point else param.dtype
        size = param.numel() * torch.empty(0, dtype=target).element_size()
        itemsize = torch.empty(0, dtype=target).element_size()
        if target != current or (entries and (numel * itemsize + size) > bucket_bytes):
            close()
            current = target
        entries.append(BucketEntry(name, tuple(param.shape), numel))
        numel += param.numel()
    close()
    return BroadcastPlan(tuple(buckets))


class SyncGroup:
    """The process group of one trainer rank (group rank 0) and the replicas (1..world_size-1), built on a TCP
    store that group rank 0 hosts at `address` ("host:port"). Constructing it waits for every member.

    `prefix`: the store namespace the members agree on; SGLang servers form their side under their `group_name`
    (`/init_weights_update_group`), so the trainer joins them with `prefix=group_name`."""

    def __init__(self, address: str, rank: int, world_size: int, *, backend: str, timeout_s: float = 1800.0,
                 prefix: str = "agentgym-weight-sync"):
        host, port = address.rsplit(":", 1)
        timeout = timedelta(seconds=timeout_s)
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self._store = dist.TCPStore(host, int(port), world_size, is_master=rank == 0, timeout=timeout,
                                    wait_for_workers=False)
        store = dist.PrefixStore(prefix, self._store)
        if backend == "nccl":
            self.group = dist.ProcessGroupNCCL(store, rank, world_size)
        elif backend == "gloo":
            self.group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        else:
            raise ValueError(f"weight sync backend must be nccl or gloo, got {backend!r}")

    def broadcast(self, tensor: torch.Tensor) -> None:
        self.group.broadcast(tensor, 0).wait()

    def close(self) -> None:
        self.group = None
        self._store = None


def _full(param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    tensor = param.detach().to(dtype)
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


@torch.no_grad()
def send_weights(model: nn.Module, plan: BroadcastPlan, group: SyncGroup | None, device: torch.device, *,
                 per_tensor: bool = False) -> int:
    """Every trainer rank calls this (the shard gathers are collective); the rank holding `group` (trainer rank 0)
    packs each bucket and broadcasts it to the replicas. Returns the tensors sent (0 on the other ranks).

    `per_tensor`: one broadcast per tensor of the bucket, in the bucket's order (each a view of the packed buffer),
    as SGLang's `/update_weights_from_distributed` receives them; otherwise one broadcast per bucket."""
    params = dict(model.named_parameters())
    sent = 0
    for bucket in plan.buckets:
        dtype = bucket.torch_dtype
        flat = torch.empty(bucket.numel if group is not None else 0, dtype=dtype, device=device)
        for entry in bucket.entries:
            full = _full(params[entry.name], dtype)
            if group is not None:
                flat[entry.offset: entry.offset + entry.numel].view(entry.shape).copy_(full)
        if group is not None:
            if per_tensor:
                for entry in bucket.entries:
                    group.broadcast(flat[entry.offset: entry.offset + entry.numel])
            else:
                group.broadcast(flat)
            sent += len(bucket.entries)
    return sent


def receive_buckets(plan: BroadcastPlan, group: SyncGroup, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """The replica's side: each bucket broadcast from group rank 0, as views of a flat buffer on `device`, lazily
    (the engine copies one bucket into its model before the next arrives)."""
    for bucket in plan.buckets:
        flat = torch.empty(bucket.numel, dtype=bucket.torch_dtype, device=device)
        group.broadcast(flat)
        yield {e.name: flat[e.offset: e.offset + e.numel].view(e.shape) for e in bucket.entries}
