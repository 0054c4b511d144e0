"""Weights handed to an engine as a few flat buffers on the device, read as an ordinary state dict.

The trainer packs its full weights, already cast to the engine's dtype, into buckets (one flat tensor each, every
weight a slice of one) on its own device (`agentgym.trainer.workers.weight_export`). A `PackedWeights` is a
`Mapping[str, Tensor]` over those buckets, so every weight receiver takes it where it takes a state dict: the
in-process engines copy each view into their parameters in place (device to device, no host copy), the server
engines write it to disk as before.

A bucket travels one of two ways:
- `tensor`: the buffer itself, when trainer and engine share a process (one GPU, or a replica inside each trainer
  rank). Nothing is copied until the engine copies the views into its parameters.
- `ipc`: a CUDA IPC handle of the buffer (`torch.multiprocessing.reductions.reduce_tensor`), when the engine lives
  in another process on the same machine (a Ray worker exporting to the driver's engine). Only the handle, a few
  hundred bytes, passes through Ray; the receiver maps the exporter's memory and copies from it. The exporter keeps
  the buffers until the receiver is done (`release_weights` on the worker); `load_state_dict_in_place`
  synchronises the device after its copies, so the buffers may be freed once it returns.

CUDA cannot open an IPC handle in the process that made it, so a same-process hand-over always uses `tensor`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch


class WeightMappingError(RuntimeError):
    """The exporter's GPU memory cannot be mapped into this process (another machine, or a GPU it does not see)."""


@dataclass(frozen=True)
class BucketEntry:
    """One weight: `numel(shape)` elements of its bucket starting at `offset` (elements, not bytes)."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class WeightBucket:
    """A flat buffer holding the weights of `entries` (tied weights share one slice), by value or by IPC handle."""

    entries: tuple[BucketEntry, ...]
    tensor: torch.Tensor | None = None
    ipc: tuple[Any, tuple] | None = None  # (rebuild function, its arguments), from reduce_tensor
    device_uuid: str | None = None  # the exporter's GPU, to find it under this process's device numbering
    _opened: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.tensor is None) == (self.ipc is None):
            raise ValueError("a WeightBucket holds either its tensor or an IPC handle of it, not both or neither")

    def open(self) -> torch.Tensor:
        """The flat buffer: the tensor itself, or the exporter's memory mapped into this process (once)."""
        if self.tensor is not None:
            return self.tensor
        if self._opened is None:
            rebuild, args = self.ipc
            args = _local_device_args(rebuild, args, self.device_uuid)
            try:
                self._opened = rebuild(*args)
            except RuntimeError as exc:  # e.g. a handle of another machine, or opened in its own process
                raise WeightMappingError(f"cannot open the CUDA IPC handle of a weight bucket: {exc}") from exc
        return self._opened

    def close(self) -> None:
        """Drop this process's mapping of an IPC bucket (the exporter may then free the memory)."""
        self._opened = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_opened"] = None
        return state


def _local_device_args(rebuild: Any, args: tuple, device_uuid: str | None) -> tuple:
    """The handle's device index is the exporter's; under another CUDA_VISIBLE_DEVICES (a Ray actor sees its GPU
    as 0) the same GPU has another index here. Find it by UUID and put that index in the arguments."""
    if device_uuid is None or not torch.cuda.is_available():
        return args
    local = next((i for i in range(torch.cuda.device_count())
                  if str(torch.cuda.get_device_properties(i).uuid) == device_uuid), None)
    if local is None:
        raise WeightMappingError(f"the trainer's GPU (uuid {device_uuid}) is not visible to this process, so its weights "
                           "cannot be mapped here; run the engine on a node and GPU set that includes it, or use "
                           "the host path (weight_transport='state_dict')")
    import inspect

    # rebuild_cuda_tensor(tensor_cls, size, stride, offset, storage_cls, dtype, storage_device, handle, ...)
    position = list(inspect.signature(rebuild).parameters).index("storage_device")
    return args[:position] + (local,) + args[position + 1:]


class PackedWeights(Mapping[str, torch.Tensor]):
    """A read-only state dict whose tensors are views into a few device buckets (see the module docstring)."""

    def __init__(self, buckets: list[WeightBucket]) -> None:
        self.buckets = buckets
        self._where: dict[str, tuple[int, BucketEntry]] = {}
        for b, bucket in enumerate(buckets):
            for entry in bucket.entries:
                if entry.name in self._where:
                    raise ValueError(f"weight {entry.name!r} appears in two buckets")
                self._where[entry.name] = (b, entry)

    def __getitem__(self, name: str) -> torch.Tensor:
        b, entry = self._where[name]
        flat = self.buckets[b].open()
        return flat[entry.offset: entry.offset + entry.numel].view(entry.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    @property
    def nbytes(self) -> int:
        """Bytes in the buckets (tied weights counted once)."""
        total = 0
        for bucket in self.buckets:
            end = max((e.offset + e.numel for e in bucket.entries), default=0)
            total += end * bucket.open().element_size() if bucket.entries else 0
        return total

    def close(self) -> None:
        for bucket in self.buckets:
            bucket.close()
