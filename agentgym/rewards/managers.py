"""Reward managers (verl's `reward_model.reward_manager`): how the reward function is called over a batch.

- `naive` (verl's default; `dapo` is the same call, DAPO's length shaping being `reward_model.overlong_buffer`):
  one call per trajectory, in order.
- `batch`: one call for the whole batch, for functions that amortise work (one process pool, one HTTP request).
- `rate_limited`: one call per trajectory, concurrently, at most `max_concurrent` in flight, started no faster
  than the token bucket allows and each cut off after `timeout` seconds: for expensive or remote checks such as
  running unit tests in a sandbox. The bucket is the tools' (agentgym.tools.rate_limit), shared by the run's
  processes through Ray when `shared` is set.

Per-trajectory managers can also score each trajectory as soon as its episode ends
(`reward_model.launch_reward_fn_async`), which overlaps scoring with the rest of the rollout.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentgym.errors import ConfigError
from agentgym.rewards.functions import Scored, error_result, function_style, split_result, verl_arguments
from agentgym.trajectory import Trajectory

MANAGER_NAMES = ("naive", "dapo", "batch", "rate_limited")


def default_reward(trajectory: Trajectory) -> float:
    return trajectory.reward


@dataclass
class RewardFunction:
    """A user function and how to call it: verl's arguments for verl-style functions, the trajectory otherwise."""

    fn: Callable[..., Any] = default_reward
    tokenizer: Any = None
    reward_fn_key: str = "data_source"
    reward_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def style(self) -> str:
        return function_style(self.fn)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def _invoke_one(self, traj: Trajectory) -> Any:
        if self.style == "verl":
            return self.fn(**verl_arguments(traj, self.tokenizer, self.reward_fn_key), **self.reward_kwargs)
        return self.fn(traj)

    def call_one(self, traj: Trajectory) -> Scored:
        """The function's result for one trajectory; an exception becomes an error record scoring 0."""
        try:
            return split_result(self._invoke_one(traj))
        except Exception as exc:  # a reward bug must not end the run: the trajectory scores 0 and says why
            return error_result(exc)

    async def acall_one(self, traj: Trajectory) -> Scored:
        """As `call_one`, off the event loop: an async function is awaited, a plain one runs in a thread."""
        if not self.is_async:
            return await asyncio.to_thread(self.call_one, traj)
        try:
            return split_result(await self._invoke_one(traj))
        except Exception as exc:
            return error_result(exc)

    async def call_batch(self, trajs: Sequence[Trajectory]) -> list[Scored]:
        """One call for the batch; samples whose arguments cannot be built get their error and are left out."""
        out: list[Scored | None] = [None] * len(trajs)
        args: list[dict[str, Any]] = []
        index: list[int] = []
        for i, traj in enumerate(trajs):
            if self.style == "verl_batch":
                try:
                    args.append(verl_arguments(traj, self.tokenizer, self.reward_fn_key))
                except Exception as exc:
                    out[i] = error_result(exc)
                    continue
            index.append(i)
        if index:
            try:
                if self.style == "verl_batch":
                    result = self.fn(data_sources=[a["data_source"] for a in args],
                                     solution_strs=[a["solution_str"] for a in args],
                                     ground_truths=[a["ground_truth"] for a in args],
                                     extra_infos=[a["extra_info"] for a in args], **self.reward_kwargs)
                else:
                    result = self.fn([trajs[i] for i in index])
                if inspect.isawaitable(result):
                    result = await result
                results = list(result)
                if len(results) != len(index):
                    raise ValueError(f"the batch reward function returned {len(results)} results for "
                                     f"{len(index)} samples")
                for i, value in zip(index, results):
                    try:
                        out[i] = split_result(value)
                    except Exception as exc:
                        out[i] = error_result(exc)
            except Exception as exc:
                for i in index:
                    out[i] = error_result(exc)
        return [s for s in out if s is not None]


class RewardManager(Protocol):
    per_sample: bool
    """True when scoring one trajectory at a time costs no more than scoring the batch (async scoring uses it)."""

    async def score(self, trajectories: Sequence[Trajectory]) -> list[Scored]: ...

    async def score_one(self, trajectory: Trajectory) -> Scored: ...


@dataclass
class NaiveManager:
    function: RewardFunction
    per_sample: bool = True

    async def score(self, trajectories: Sequence[Trajectory]) -> list[Scored]:
        if self.function.is_async:
            return [await self.function.acall_one(t) for t in trajectories]
        return [self.function.call_one(t) for t in trajectories]

    async def score_one(self, trajectory: Trajectory) -> Scored:
        return await self.function.acall_one(trajectory)


@dataclass
class BatchManager:
    function: RewardFunction
    per_sample: bool = False

    async def score(self, trajectories: Sequence[Trajectory]) -> list[Scored]:
        return await self.function.call_batch(trajectories)

    async def score_one(self, trajectory: Trajectory) -> Scored:
        return (await self.function.call_batch([trajectory]))[0]


@dataclass
class RateLimitedManager:
    function: RewardFunction
    limiter: Any
    max_concurrent: int = 1
    timeout: float | None = None
    per_sample: bool = True
    _slots: dict[int, asyncio.Semaphore] = field(default_factory=dict, repr=False)
    _waited: list[float] = field(default_factory=list, repr=False)

    def _slot(self) -> asyncio.Semaphore:
        loop = id(asyncio.get_running_loop())
        if loop not in self._slots:
            self._slots[loop] = asyncio.Semaphore(self.max_concurrent)
        return self._slots[loop]

    async def score_one(self, trajectory: Trajectory) -> Scored:
        async with self._slot():
            self._waited.append(await self.limiter.acquire())
            start = time.monotonic()
            try:
                return await asyncio.wait_for(self.function.acall_one(trajectory), self.timeout)
            except asyncio.TimeoutError:
                return Scored(0.0, {}, f"TimeoutError: the reward function gave no result within {self.timeout:g} s "
                                       f"(reward_model.rate_limit.timeout; ran {time.monotonic() - start:.1f} s)")

    async def score(self, trajectories: Sequence[Trajectory]) -> list[Scored]:
        return list(await asyncio.gather(*(self.score_one(t) for t in trajectories)))

    def step_metrics(self) -> dict[str, float]:
        waited, self._waited = self._waited, []
        if not waited:
            return {}
        return {"reward/rate_limit/wait_s/mean": sum(waited) / len(waited), "reward/rate_limit/wait_s/max": max(waited)}


def make_manager(name: str, function: RewardFunction, *, rate_limit: Any = None) -> RewardManager:
    """The manager `reward_model.reward_manager` names, checked against the function's form."""
    entry = "reward_model.reward_manager"
    style = function.style
    if name == "batch":
        if style == "verl":
            raise ConfigError("reward_manager=batch calls the reward function once per batch with data_sources, "
                              "solution_strs, ground_truths, extra_infos (lists), but it takes one solution_str.",
                              entry=entry, fix="use reward_manager=naive, or write the function's batch form")
        return BatchManager(function)
    if style == "verl_batch":
        raise ConfigError(f"the reward function takes lists (solution_strs, ...): verl's batch form, but "
                          f"reward_manager={name} calls it once per sample.", entry=entry,
                          fix="set reward_model.reward_manager=batch")
    if name in ("naive", "dapo"):
        return NaiveManager(function)
    if name == "rate_limited":
        from agentgym.tools.rate_limit import GlobalTokenBucket, TokenBucket

        rl = rate_limit
        rate = rl.max_rpm / 60.0 if rl.max_rpm else float("inf")
        if rate == float("inf"):
            limiter: Any = _Unlimited()
        elif rl.shared:
            limiter = GlobalTokenBucket("reward_model.rate_limit", rate, rl.burst)
        else:
            limiter = TokenBucket(rate, rl.burst)
        return RateLimitedManager(function, limiter, max_concurrent=rl.max_concurrent, timeout=rl.timeout)
    raise ConfigError(f"unknown reward manager `{name}`.", entry=entry, fix=f"use one of {list(MANAGER_NAMES)}")


class _Unlimited:
    async def acquire(self, timeout: float | None = None) -> float:
        return 0.0
