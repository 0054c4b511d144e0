"""Engines that live elsewhere, seen as one `Engine`: a replica in a trainer rank (or any Ray actor with a
`replica_generate` method), and a router that spreads episodes over several replicas.

Routing: the samples of one GRPO group go to one replica (they share their prompt's cached blocks there), a
trajectory stays on its replica across turns (its conversation's blocks are cached there), and a new group goes to
the replica with the fewest requests in flight.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from agentgym.rollout.engines.base import EngineError, GenerateOutput, SamplingParams


class ReplicaHandle(Protocol):
    """A Ray actor handle whose `replica_generate.remote(prompt_ids, sampling, session_id, images)` returns a
    `GenerateOutput` (agentgym.trainer.workers.worker.TrainWorker is one)."""

    replica_generate: Any


class RemoteEngine:
    """An engine replica behind a Ray actor handle. Its lifetime and weights are its host's business: `start`,
    `close` and `update_weights` do nothing here (the trainer syncs colocated replicas inside their ranks)."""

    takes_images = True

    def __init__(self, handle: ReplicaHandle, name: str = "replica"):
        self.handle = handle
        self.name = name

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams, *, session_id: str | None = None,
                       images: Any = None) -> GenerateOutput:
        return await self.handle.replica_generate.remote(prompt_ids, sampling, session_id, images)

    async def update_weights(self, state_dict: Any = None, *, path: str | None = None) -> None:
        raise EngineError(f"{self.name}'s weights are synced by the trainer rank that hosts it, not through the "
                          "rollout")

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def health(self) -> bool:
        return True

    async def __aenter__(self) -> RemoteEngine:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None


def group_of(session_id: str) -> str:
    """The GRPO group of a trajectory id: the agent loop names trajectories `<group_id>-<k>`."""
    return session_id.rsplit("-", 1)[0]


class ReplicaRouter:
    """Several engines as one; see the module docstring for where a request goes."""

    def __init__(self, engines: Sequence[Any], *, max_tracked_groups: int = 65536):
        if not engines:
            raise ValueError("a router needs at least one engine")
        self.engines = list(engines)
        self.takes_images = all(e.takes_images for e in self.engines)
        self.in_flight = [0] * len(self.engines)
        self.requests = Counter[int]()
        self._groups: OrderedDict[str, int] = OrderedDict()
        self._max_groups = max_tracked_groups

    def pick(self, session_id: str | None) -> int:
        if session_id is None:
            return min(range(len(self.engines)), key=lambda i: (self.in_flight[i], self.requests[i]))
        group = group_of(session_id)
        index = self._groups.get(group)
        if index is None:
            index = min(range(len(self.engines)), key=lambda i: (self.in_flight[i], self.requests[i]))
            self._groups[group] = index
            if len(self._groups) > self._max_groups:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(group)
        return index

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams, *, session_id: str | None = None,
                       images: Any = None) -> GenerateOutput:
        index = self.pick(session_id)
        self.in_flight[index] += 1
        self.requests[index] += 1
        try:
            return await self.engines[index].generate(prompt_ids, sampling, session_id=session_id, images=images)
        finally:
            self.in_flight[index] -= 1

    async def update_weights(self, state_dict: Any = None, *, path: str | None = None) -> None:
        await asyncio.gather(*(e.update_weights(state_dict, path=path) for e in self.engines))

    async def start(self) -> None:
        await asyncio.gather(*(e.start() for e in self.engines))

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self.engines))

    async def health(self) -> bool:
        return all(await asyncio.gather(*(e.health() for e in self.engines)))

    async def __aenter__(self) -> ReplicaRouter:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
