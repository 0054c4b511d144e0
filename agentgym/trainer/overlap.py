"""Rollouts that overlap the update: `trainer.rollout_mode: one_step_off | async` (docs/async.md).

`RolloutPipeline` keeps batch collections running ahead of the trainer. Each launched collection is one
`data.train_batch_size` batch of rows (the unit `RLTrainer._collect_step` collects), numbered 1, 2, ... in launch
order; its groups join a queue of finished groups when the collection ends (collections finishing together: the
earlier launch first). A step takes `train_batch_size` groups from the queue in that order, and waits while it
holds fewer.

What may be launched (B = train batch size in groups, v = the rollout's policy version counted from the
pipeline's start, S = max_staleness):
- one_step_off: one batch beyond those the trainer has taken, so step k+1's rollout runs while step k trains
  and each trained group is exactly one update old at most (verl's one-step-off policy).
- async: the groups launched (less those dropped) stay within (v + S + 1) * K * B, AReaL's rule (K =
  `trainer.trigger_parameter_sync_step`, the updates per weight sync: a version is trained for K steps; verl's
  fully-async bound), so whatever runs is at most S versions behind by the time it is trained unless it is a
  straggler; a group whose oldest sampled token is more than S versions behind the weights it would be trained
  from is dropped, counted (`rollout/staleness/dropped_groups`), and its place given to a new launch. With S = 0
  nothing runs during an update, and the run is the sync run: the same batches, ids and trajectories.

The pipeline knows nothing of workers or weights: the trainer calls `take` before each step, `synced` after each
weight sync, and `close` at the end. For a checkpoint, `open_launches` says which launches are not yet trained
(running, or some of their groups queued) and which of their groups are already consumed, so the trainer can
save their rows to be collected again by the resumed run (collections themselves are not saved).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from agentgym.trajectory import NOT_SAMPLED, Trajectory

OverlapMode = Literal["one_step_off", "async"]
CollectBatch = Callable[[int], Awaitable[tuple[list[Trajectory], dict[str, float]]]]


def stamp_versions(trajectories: Sequence[Trajectory], version: int) -> None:
    """Trajectories from a rollout that records no versions: every sampled token is put at `version` (the policy
    version when their collection started; a weight sync during it makes this the oldest possible)."""
    for traj in trajectories:
        if not traj.token_versions:
            traj.token_versions = [version if m else NOT_SAMPLED for m in traj.loss_mask]


def staleness(traj: Trajectory, version: int) -> int:
    """How many policy versions the trajectory's oldest sampled token lags `version` (0 when it has none)."""
    sampled = traj.sampled_versions
    return version - min(sampled) if sampled else 0


def staleness_metrics(trajectories: Sequence[Trajectory], version: int) -> dict[str, float]:
    """`rollout/staleness/*` of the trajectories a step trains from policy `version`."""
    per_traj = np.array([staleness(t, version) for t in trajectories], dtype=np.float64)
    tokens = np.array([version - v for t in trajectories for v in t.sampled_versions], dtype=np.float64)
    out = {"rollout/policy_version": float(version)}
    if per_traj.size:
        out.update({"rollout/staleness/mean": float(per_traj.mean()), "rollout/staleness/max": float(per_traj.max()),
                    "rollout/staleness/min": float(per_traj.min())})
        out["rollout/staleness/mixed_version_fraction"] = float(np.mean(
            [len(set(t.sampled_versions)) > 1 for t in trajectories]))
    if tokens.size:
        out["rollout/staleness/token_mean"] = float(tokens.mean())
    return out


@dataclass
class _Group:
    batch: int  # the launch it came from
    position: int  # its place among the launch's groups, in the order the collection returned them
    trajectories: list[Trajectory]


def _groups(batch: int, trajectories: Sequence[Trajectory]) -> list[_Group]:
    """The batch's groups in the order the collection returned them (the order sync mode trains them in)."""
    by_id: dict[str, _Group] = {}
    for traj in trajectories:
        by_id.setdefault(traj.group_id, _Group(batch, len(by_id), [])).trajectories.append(traj)
    return list(by_id.values())


@dataclass(frozen=True)
class OpenLaunch:
    """A launch not yet wholly trained: `groups` (None while it runs) and the positions of those already taken
    (trained or dropped)."""

    groups: int | None
    consumed: frozenset[int]


@dataclass
class StepBatch:
    """What one step trains: the groups' trajectories, the collections' metrics, and what waiting cost."""

    trajectories: list[Trajectory]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RolloutPipeline:
    """Collections running ahead of the trainer, within the mode's bound (see the module docstring).

    `collect(index)` collects launch `index`'s batch (the trainer's `_collect_step`); `groups_per_step` is
    `data.train_batch_size`; `steps` how many steps the run still trains (no collection is launched past them);
    `version` the rollout's policy version now; `updates_per_sync` how many steps train on one version (async)."""

    collect: CollectBatch
    mode: OverlapMode
    max_staleness: int
    groups_per_step: int
    steps: int
    version: int
    first_index: int = 1
    updates_per_sync: int = 1
    _tasks: dict[int, asyncio.Task] = field(default_factory=dict)
    _started_at: dict[int, tuple[int, float]] = field(default_factory=dict)
    _ready: deque[_Group] = field(default_factory=deque)
    _launched: int = 0
    _start_version: int = 0
    _taken_steps: int = 0
    _dropped_groups: int = 0
    # finished launches with groups still queued: index -> (their group count, the positions taken)
    _finished: dict[int, tuple[int, set[int]]] = field(default_factory=dict)
    _finished_metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("one_step_off", "async"):
            raise ValueError(f"RolloutPipeline runs rollout_mode one_step_off or async, not {self.mode!r}")
        if self.groups_per_step < 1:
            raise ValueError(f"groups_per_step must be at least 1, got {self.groups_per_step}")

    # ---- launching ----
    def _capacity(self) -> int:
        """How many groups may have been launched (less those dropped) right now."""
        if self.mode == "one_step_off":
            steps_ahead = self._taken_steps + 1
        else:
            steps_ahead = (self.version - self._start_version + self.max_staleness + 1) * self.updates_per_sync
        return min(steps_ahead, self.steps) * self.groups_per_step

    def start(self) -> None:
        """Launch what the bound allows at the start of the run."""
        self._start_version = self.version
        self._fill()

    def _fill(self) -> None:
        # A launch whenever a group's room is free: after drops a batch may overshoot, its rest waits in the queue.
        while self._launched * self.groups_per_step - self._dropped_groups < self._capacity():
            self._launched += 1
            index = self.first_index + self._launched - 1
            self._started_at[index] = (self.version, time.perf_counter())
            self._tasks[index] = asyncio.create_task(self.collect(index), name=f"agentgym-rollout-{index}")

    def synced(self, version: int) -> None:
        """The rollout has the weights of policy `version` now: async mode may launch further."""
        self.version = version
        self._fill()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # ---- taking ----
    async def _wait_for_a_batch(self) -> None:
        """Move the first collection to finish (of those running) into the queue, its groups in its order."""
        if not self._tasks:
            raise RuntimeError("the rollout pipeline has nothing running and too few groups for a step; "
                               "this is a bug in the launch bound")
        done, _ = await asyncio.wait(self._tasks.values(), return_when=asyncio.FIRST_COMPLETED)
        # Of those finished together, the earliest launch first: with max_staleness 0 the order is sync's.
        for index in sorted(i for i, t in self._tasks.items() if t in done):
            task = self._tasks.pop(index)
            trajectories, metrics = task.result()
            started_version, started = self._started_at.pop(index)
            stamp_versions(trajectories, started_version)
            groups = _groups(index, trajectories)
            self._finished[index] = (len(groups), set())
            self._ready.extend(groups)
            self._finished_metrics["timing_s/rollout"] = time.perf_counter() - started
            self._finished_metrics.update(metrics)

    async def take(self) -> StepBatch:
        """The next step's groups: `groups_per_step` of them in the queue's order, none staler than the bound."""
        waited = time.perf_counter()
        chosen: list[_Group] = []
        dropped_groups = dropped_trajectories = 0
        while len(chosen) < self.groups_per_step:
            if not self._ready:
                await self._wait_for_a_batch()
                continue
            group = self._ready.popleft()
            self._consume(group)
            lag = max(staleness(t, self.version) for t in group.trajectories)
            if self.mode == "async" and lag > self.max_staleness:
                dropped_groups += 1
                dropped_trajectories += len(group.trajectories)
                self._dropped_groups += 1
                self._fill()  # the dropped group's place goes to a new launch
                continue
            chosen.append(group)
        self._taken_steps += 1
        if self.mode == "one_step_off":
            self._fill()  # the next step's rollout starts now, while this one trains
        trajectories = [t for g in chosen for t in g.trajectories]
        metrics = dict(self._finished_metrics)
        self._finished_metrics.clear()
        metrics.update(staleness_metrics(trajectories, self.version))
        metrics.update({
            "timing_s/rollout_wait": time.perf_counter() - waited,
            "rollout/staleness/dropped_groups": float(dropped_groups),
            "rollout/staleness/dropped_trajectories": float(dropped_trajectories),
            "rollout/staleness/dropped_groups_total": float(self._dropped_groups),
            "rollout/staleness/in_flight_batches": float(self.in_flight),
            "rollout/staleness/queued_groups": float(len(self._ready)),
        })
        return StepBatch(trajectories, metrics)

    def _consume(self, group: _Group) -> None:
        count, taken = self._finished[group.batch]
        taken.add(group.position)
        if len(taken) == count:
            del self._finished[group.batch]  # wholly taken

    def open_launches(self) -> dict[int, OpenLaunch]:
        """The launches not yet wholly taken, by index: running, or with groups in the queue."""
        out = {index: OpenLaunch(None, frozenset()) for index in self._tasks}
        out.update({index: OpenLaunch(count, frozenset(taken)) for index, (count, taken) in self._finished.items()})
        return dict(sorted(out.items()))

    async def close(self) -> None:
        """Cancel the collections still running (the run ended, or failed)."""
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: PERF203 - each is awaited to let it unwind
                pass
