"""Agent-loop workers: the step's episodes spread over `actor_rollout_ref.rollout.agent.num_workers` Ray actors.

One event loop in the driver runs out of CPU long before the replicas run out of GPU: every episode renders chat
templates, parses tool calls and waits on tools there. So each `AgentWorker` is an async Ray actor with its own
event loop, its own tool and interaction instances (and so its own sandbox clients) and its own `ReplicaRouter`
over the replicas the trainer ranks host; it calls them directly (their handles travel to it), so no token passes
through the driver.

The driver (`AgentWorkerPool.run`) names every episode itself (`plan_episodes`: the ids of the one-loop path),
gives each worker a share of whole GRPO groups (a group's samples share their prompt on one replica), and receives
trajectories as they end, streamed back one by one: `on_done` is called in the driver as each arrives and the
trajectories come back in the episodes' order. A worker that dies mid-step is replaced by a fresh one, and only
the episodes it had not delivered are run again, on another worker; the step loses nothing and its metrics count
`rollout/agent_workers/reruns` (episodes run again) and `rollout/agent_workers/restarts` (workers replaced).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from agentgym.config.schema import AgentGymConfig
from agentgym.rollout.agent_loop import EpisodeSpec
from agentgym.rollout.build import agent_loops, rollout_parts
from agentgym.rollout.protocol import OnDone
from agentgym.rollout.replicas import RemoteEngine, ReplicaRouter
from agentgym.trajectory import Trajectory

logger = logging.getLogger(__name__)

# How often one episode may be on a worker that dies before the step gives up: an episode that kills every worker
# it runs on (a tool that exhausts the node's memory) must stop the run with its name, not cycle forever.
MAX_ATTEMPTS = 3

_WORKER_DEATH = (RayActorError, ActorUnavailableError)


class AgentWorker:
    """One agent-loop worker (run as an async Ray actor): the run's agent loops, built from the config inside the
    worker, over a router of the trainer ranks' replicas."""

    def __init__(self, cfg: AgentGymConfig, replicas: Sequence[Any], index: int = 0):
        self.index = index
        self.router = ReplicaRouter([RemoteEngine(h, f"rank {i}'s replica") for i, h in enumerate(replicas)])
        self.loop, self.greedy_loop = agent_loops(cfg, self.router, *rollout_parts(cfg))

    async def ready(self) -> dict[str, Any]:
        """Where the worker runs, once its loops are built (a bad config fails here, at start, with its cause)."""
        return {"index": self.index, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    async def run(self, episodes: list[EpisodeSpec], greedy: bool = False) -> AsyncIterator[tuple[int, Trajectory]]:
        """(index into `episodes`, trajectory) as each episode ends; called as a streaming Ray generator."""
        loop = self.greedy_loop if greedy else self.loop
        async with aclosing(loop.stream_episodes(episodes)) as stream:
            async for item in stream:
                yield item

    async def take_requests(self) -> dict[int, int]:
        """Model turns sent to each replica since the last call."""
        requests = dict(self.router.requests)
        self.router.requests.clear()
        return requests


_REMOTE_WORKER = ray.remote(AgentWorker)


def split_groups(episodes: Sequence[EpisodeSpec], parts: int) -> list[list[int]]:
    """Episode indices in `parts` shares of whole groups, consecutive groups together, shares as even as groups
    allow (in episodes)."""
    groups: dict[str, list[int]] = {}
    for i, episode in enumerate(episodes):
        groups.setdefault(episode.group_id, []).append(i)
    shares: list[list[int]] = [[] for _ in range(parts)]
    total, placed = len(episodes), 0
    for members in groups.values():
        # The share whose slice of the episode count this group's middle falls in.
        shares[min(parts - 1, (placed + len(members) // 2) * parts // max(total, 1))].extend(members)
        placed += len(members)
    return shares


class AgentWorkerPool:
    """The driver's side: `num_workers` agent workers, episodes sent, trajectories gathered, deaths survived."""

    def __init__(self, cfg: AgentGymConfig, replicas: Sequence[Any], num_workers: int, *,
                 max_attempts: int = MAX_ATTEMPTS):
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self.cfg = cfg
        self.replicas = list(replicas)
        self.max_attempts = max_attempts
        self.actors = [self._spawn(i) for i in range(num_workers)]
        self.reruns = 0
        self.restarts = 0

    def _spawn(self, index: int) -> Any:
        # num_cpus=0: the trainer's placement group may hold every CPU of the nodes (colocated CPU runs); an agent
        # worker is mostly waiting on replicas and tools. SPREAD puts the workers on different nodes.
        return _REMOTE_WORKER.options(num_cpus=0, max_restarts=0, scheduling_strategy="SPREAD").remote(
            self.cfg, self.replicas, index)

    async def start(self) -> list[dict[str, Any]]:
        """Wait until every worker has built its loops; a worker that cannot is an error here, with its cause."""
        return list(await asyncio.gather(*(a.ready.remote() for a in self.actors)))

    async def run(self, episodes: Sequence[EpisodeSpec], *, greedy: bool = False,
                  on_done: OnDone | None = None) -> list[Trajectory]:
        """Every episode's trajectory, in the episodes' order, whatever worker ran it and however often one died."""
        results: list[Trajectory | None] = [None] * len(episodes)
        attempts = [0] * len(episodes)
        pending: dict[asyncio.Future, tuple[int, Any, list[int]]] = {}

        def launch(slot: int, indices: list[int]) -> None:
            for i in indices:
                attempts[i] += 1
            actor = self.actors[slot]
            task = asyncio.ensure_future(self._stream(actor, episodes, indices, greedy, results, on_done))
            pending[task] = (slot, actor, indices)

        for slot, share in enumerate(split_groups(episodes, len(self.actors))):
            if share:
                launch(slot, share)
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    slot, actor, indices = pending.pop(task)
                    error = task.exception()
                    if error is None:
                        continue
                    if not isinstance(error, _WORKER_DEATH):
                        raise error
                    left = [i for i in indices if results[i] is None]
                    worn = [episodes[i].uid for i in left if attempts[i] >= self.max_attempts]
                    if worn:
                        raise RuntimeError(
                            f"agent workers died {self.max_attempts} times while running episode(s) {worn[:5]}; "
                            f"the last death: {error}. Look for what these rows do to a worker process (memory, "
                            "a tool that exits the process) in the Ray worker logs") from error
                    self._replace(slot, actor, error)
                    if left:
                        self.reruns += len(left)
                        launch(self._least_busy(slot, pending), left)
        finally:
            for task in pending:
                task.cancel()
        return [t for t in results if t is not None]  # every slot is filled once `pending` empties without error

    async def _stream(self, actor: Any, episodes: Sequence[EpisodeSpec], indices: list[int], greedy: bool,
                      results: list[Trajectory | None], on_done: OnDone | None) -> None:
        stream = actor.run.options(num_returns="streaming").remote([episodes[i] for i in indices], greedy)
        try:
            async for ref in stream:
                local, trajectory = await ref
                results[indices[local]] = trajectory
                if on_done is not None:
                    on_done(trajectory)
        except asyncio.CancelledError:
            ray.cancel(stream)  # the step was abandoned: the worker stops its episodes too
            raise

    def _replace(self, slot: int, dead: Any, error: BaseException) -> None:
        """A fresh worker in the dead one's place (once, however many of its streams report the death)."""
        if self.actors[slot] is not dead:
            return
        logger.warning("agent worker %d died (%s); starting a new one in its place", slot, error)
        ray.kill(dead, no_restart=True)  # an unavailable actor may still be running: make sure it stops
        self.actors[slot] = self._spawn(slot)
        self.restarts += 1

    def _least_busy(self, failed: int, pending: dict[asyncio.Future, tuple[int, Any, list[int]]]) -> int:
        """Where a dead worker's episodes run again: the live worker with the fewest episodes in hand (the fresh
        replacement only when it is the only worker: the others are warm)."""
        if len(self.actors) == 1:
            return failed
        load = Counter({slot: 0 for slot in range(len(self.actors)) if slot != failed})
        for slot, _, indices in pending.values():
            if slot != failed:
                load[slot] += len(indices)
        return min(load, key=lambda slot: (load[slot], slot))

    def take_metrics(self) -> dict[str, float]:
        """Reruns and restarts since the last call (a step's)."""
        out = {"rollout/agent_workers/reruns": float(self.reruns), "rollout/agent_workers/restarts": float(self.restarts)}
        self.reruns = self.restarts = 0
        return out

    async def take_requests(self) -> Counter[int]:
        """Model turns sent to each replica since the last call, summed over the workers (a worker that died took
        its counts with it)."""
        total = Counter[int]()
        for counts in await asyncio.gather(*(a.take_requests.remote() for a in self.actors), return_exceptions=True):
            if isinstance(counts, BaseException):
                if not isinstance(counts, _WORKER_DEATH):
                    raise counts
                continue
            total.update(counts)
        return total

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
