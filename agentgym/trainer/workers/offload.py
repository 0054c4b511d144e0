"""The optimizer's state (Adam's two moments: twice the parameters in fp32) in host memory between updates.

Why: colocated, the engine's KV cache and the optimizer state compete for the GPU, and the state is only touched by
`optimizer.step`. verl's `fsdp_config.optimizer_offload` moves it to the CPU after each update and back before the
next; so does this, tensor by tensor (an FSDP2 shard's state is a DTensor, moved with its local shard). The move is
a copy both ways, also on a CPU run where both places are host memory, so the mechanism is the same everywhere
(and testable); the optimizer's arithmetic does not change, so the run's losses are the same to the bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.distributed.tensor import DTensor


class OptimizerOffload:
    """Moves `optimizer`'s state between `device` (for the step) and `offload_device` (between updates)."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device,
                 offload_device: torch.device = torch.device("cpu")) -> None:
        self.optimizer = optimizer
        self.device = device
        self.offload_device = offload_device
        self.resident = True  # the state (if any yet) is on `device`
        self.moves = 0

    def _move(self, to: torch.device) -> None:
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":  # Adam's step count is a host scalar anyway
                    state[key] = value.to(to, copy=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.moves += 1

    def offload(self) -> None:
        """State to `offload_device` (and the freed device memory back to the allocator's pool for others)."""
        if not self.resident:
            return
        self._move(self.offload_device)
        self.resident = False
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def load(self) -> None:
        """State back to `device` for the step."""
        if self.resident:
            return
        self._move(self.device)
        self.resident = True

    @contextmanager
    def on_device(self) -> Iterator[None]:
        """The state on the device for the block (an update, a checkpoint save or load), offloaded after it."""
        self.load()
        try:
            yield
        finally:
            self.offload()

    def state_devices(self) -> set[str]:
        """Where the state's tensors are now (their local shards' devices)."""
        found = set()
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    local = value.to_local() if isinstance(value, DTensor) else value
                    found.add(str(local.device))
        return found
