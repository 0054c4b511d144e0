"""Which policy version sampled each token, and the pause a weight sync puts on generation.

When rollouts overlap the trainer (`trainer.rollout_mode: one_step_off | async`), a weight sync lands while
episodes are in flight. `PolicyVersionGate` makes that exact for any engine: the sync closes the gate, waits for the
generations already running to finish under the old weights, lets the caller swap the weights (by whatever path
the run uses: a state dict, the colocated ranks, a broadcast), then opens the gate at the new version. Episodes are
not thrown away: their next generation (the next turn, or with partial rollouts the next chunk of the same turn)
runs with the new weights, and every token records the version that sampled it.

The gate holds no event-loop objects until it is first used, so a loop built outside the running loop can own one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agentgym.trajectory import NOT_SAMPLED

__all__ = ["NOT_SAMPLED", "PolicyVersionGate"]


class PolicyVersionGate:
    """Counts the generations in flight and the policy version they run under (0: the weights the run started
    with; k: the weights after the trainer's k-th update)."""

    def __init__(self, version: int = 0) -> None:
        self.version = version
        self.in_flight = 0
        self.syncs = 0
        self._syncing = False
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    @asynccontextmanager
    async def generation(self) -> AsyncIterator[int]:
        """Around one engine call: waits while a sync is under way, then yields the version the call runs under."""
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: not self._syncing)
            self.in_flight += 1
        try:
            yield self.version
        finally:
            async with changed:
                self.in_flight -= 1
                changed.notify_all()

    @asynccontextmanager
    async def weight_sync(self, version: int) -> AsyncIterator[None]:
        """Around one weight sync: new generations wait, the running ones finish, the body swaps the weights; on
        success the gate reopens at `version` (on an error, at the old one: the weights may not have changed)."""
        if version < self.version:
            raise ValueError(f"policy version {version} is older than the rollout's current version {self.version}")
        changed = self._condition()
        async with changed:
            if self._syncing:
                raise RuntimeError("a weight sync is already under way; the trainer syncs one version at a time")
            self._syncing = True
            await changed.wait_for(lambda: self.in_flight == 0)
        try:
            yield
            self.version = version
            self.syncs += 1
        finally:
            async with changed:
                self._syncing = False
                changed.notify_all()
