"""The actor's full weights packed into a few flat buffers on its own device, for an engine to copy from.

Why: the host path (`full_state_dict`: an fp32 gather to rank 0's CPU, pickled through Ray's object store to the
driver, copied into the engine's GPU) took 1.39 s per step at 0.5B on one H100, about a quarter of the step. Here
each weight is gathered on the device (a DTensor's `full_tensor()`, every rank taking part), cast to the engine's
dtype first (bf16: half the bytes of an all-gather in fp32) and copied into a bucket; rank 0 hands the engine
the buckets themselves (same process) or CUDA IPC handles of them (another process on the machine), and keeps
them until `release`. The receiving side is `agentgym.rollout.engines.weight_import`.

Used by `TrainWorker.export_weights`; kept apart from the worker so that an engine replica living inside each
trainer rank (colocated) can take the same buckets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from agentgym.rollout.engines.weight_import import BucketEntry, PackedWeights, WeightBucket

DEFAULT_BUCKET_BYTES = 512 << 20


def _local_view(value: torch.Tensor) -> torch.Tensor:
    """The tensor whose storage identifies a weight on this rank (tied weights share it)."""
    to_local = getattr(value, "to_local", None)  # a DTensor under FSDP2
    return to_local() if to_local is not None else value


def _is_dtensor(value: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(value, DTensor)


def _target_dtype(value: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None and value.dtype.is_floating_point else value.dtype


class WeightExport:
    """The buckets of one export, held by the exporting rank until the receiver has copied them."""

    def __init__(self, buckets: list[torch.Tensor], packed: PackedWeights | None) -> None:
        self.buffers = buckets
        self.packed = packed

    def share(self, *, ipc: bool) -> PackedWeights | None:
        """What to hand the receiver: the buckets by value (same process) or as CUDA IPC handles."""
        if self.packed is None or not ipc:
            return self.packed
        from torch.multiprocessing.reductions import reduce_tensor

        shared = []
        for bucket in self.packed.buckets:
            tensor = bucket.tensor
            if tensor is None or not tensor.is_cuda:
                raise ValueError("CUDA IPC hand-over needs the weights on a GPU; the host path serves CPU runs")
            uuid = str(torch.cuda.get_device_properties(tensor.device).uuid)
            shared.append(WeightBucket(bucket.entries, ipc=reduce_tensor(tensor), device_uuid=uuid))
        return PackedWeights(shared)


@dataclass
class _Plan:
    """One bucket being laid out: the weights to copy in (value, offset) and the entries naming them."""

    dtype: torch.dtype
    members: list[tuple[torch.Tensor, int]] = field(default_factory=list)
    entries: list[BucketEntry] = field(default_factory=list)
    numel: int = 0


def export_weights(model: nn.Module, *, dtype: torch.dtype | None, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                   keep: bool = True) -> WeightExport:
    """Pack `model`'s full weights (its state dict, Hugging Face names) into flat buckets on its device.

    Floating-point weights are cast to `dtype` (None: as they are); others keep their dtype and go to buckets of
    their own dtype. A bucket holds up to `bucket_bytes` (a larger weight gets one to itself). Sharded weights are
    gathered with a collective, so every rank must call this in the same order; ranks with `keep=False` take
    part in the gathers and keep nothing."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    state = model.state_dict()
    plans: list[_Plan] = []
    open_plan: dict[torch.dtype, _Plan] = {}
    tied: dict[tuple[int, int, tuple[int, ...]], tuple[_Plan, int]] = {}
    for name, value in state.items():
        target = _target_dtype(value, dtype)
        local = _local_view(value)
        shape = tuple(value.shape)
        key = (local.untyped_storage().data_ptr(), local.storage_offset(), shape)
        if key in tied and local.numel() > 0:  # a tied weight: one storage under two names shares one slice
            plan, offset = tied[key]
            plan.entries.append(BucketEntry(name, shape, offset))
            continue
        itemsize = torch.empty(0, dtype=target).element_size()
        plan = open_plan.get(target)
        if plan is None or (plan.numel > 0 and (plan.numel + value.numel()) * itemsize > bucket_bytes):
            plan = open_plan[target] = _Plan(target)
            plans.append(plan)
        plan.members.append((value, plan.numel))
        plan.entries.append(BucketEntry(name, shape, plan.numel))
        tied[key] = (plan, plan.numel)
        plan.numel += value.numel()
    device = next((_local_view(v).device for v in state.values()), torch.device("cpu"))
    buffers: list[torch.Tensor] = []
    buckets: list[WeightBucket] = []
    with torch.no_grad():
        for plan in plans:
            flat = torch.empty(plan.numel if keep else 0, dtype=plan.dtype, device=device)
            for value, offset in plan.members:
                # Cast before the gather: a bf16 all-gather moves half the bytes of an fp32 one.
                full = value.to(plan.dtype).full_tensor() if _is_dtensor(value) else value
                if keep:
                    flat[offset: offset + value.numel()].view(value.shape).copy_(full)
            if keep:
                buffers.append(flat)
                buckets.append(WeightBucket(tuple(plan.entries), tensor=flat))
    return WeightExport(buffers, PackedWeights(buckets) if keep else None)
