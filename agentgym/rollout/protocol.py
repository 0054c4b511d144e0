"""What the trainer needs from the rollout side, declared once.

The driver calls exactly these methods: no keyword is passed unless the rollout says it takes it, and nothing is
looked up by name. `make_rollout(config)` factories return a `Rollout`; a plain `collect(rows, step)` function
(with an optional engine that receives weights) becomes one through `CallableRollout`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from agentgym.trajectory import Trajectory

OnDone = Callable[[Trajectory], None]
CollectFn = Callable[..., "list[Trajectory] | Awaitable[list[Trajectory]]"]


class WeightReceiver(Protocol):
    """An engine (or anything) that takes the actor's full weights after each update; sync or async.

    `state_dict` is a mapping of Hugging Face names to tensors: a plain dict on the host, or on GPU runs a
    `PackedWeights` (engines.weight_import) whose tensors are views into the trainer's device buckets, valid
    until the call returns: copy from them, keep no reference."""

    def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> Any: ...


class Rollout(Protocol):
    """The rollout side of an RL run.

    `collect` returns `actor_rollout_ref.rollout.n` trajectories per row, the samples of one row sharing a
    `group_id`. With `greedy=True` it returns one temperature-0 trajectory per row, in the rows' order (estimators
    whose baseline is the greedy response ask for it; only rollouts with `samples_greedy` are asked). `on_done` is
    called as each episode ends (asynchronous reward scoring; only passed to rollouts with `reports_done`).
    """

    samples_greedy: bool
    reports_done: bool

    async def collect(self, rows: list[dict[str, Any]], step: int, *, greedy: bool = False,
                      on_done: OnDone | None = None) -> list[Trajectory]: ...

    async def start(self, replicas: Sequence[Any] = ()) -> None:
        """Called once by the trainer before the first step. `replicas`: the engine replicas its ranks host
        (`rollout.placement=colocated`; actor handles with `replica_generate`), empty when the rollout brings its
        own engine."""
        ...

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None: ...

    async def step_metrics(self) -> dict[str, float]:
        """What the rollout's engines did since the last call (`rollout/engine/*`), or {}."""
        ...

    def weight_sync(self, version: int) -> AbstractAsyncContextManager[None]:
        """Entered around each weight sync, whatever path the weights take (`update_weights`, the colocated
        ranks, a broadcast): a rollout whose episodes may be in flight then (overlapped modes,
        `trainer.rollout_mode`) pauses their engine calls for the body and records that tokens sampled after it
        come from policy `version` (`Trajectory.token_versions`). `unversioned_sync()` is the no-op for rollouts
        that record no versions (the trainer then stamps each trajectory with the version it was started at)."""
        ...

    async def close(self) -> None: ...


@asynccontextmanager
async def unversioned_sync(version: int = 0) -> AsyncIterator[None]:
    """`Rollout.weight_sync` of a rollout that records no versions: nothing to pause."""
    yield


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@dataclass
class CallableRollout:
    """A `collect(rows, step)` function as a `Rollout`: the simplest rollout a user can write.

    Say what the function takes: `samples_greedy=True` when it accepts `greedy=` (ReMax's baseline),
    `reports_done=True` when it accepts `on_done=`. `engine`, when given, receives the weights after each step.
    """

    fn: CollectFn
    engine: WeightReceiver | None = None
    samples_greedy: bool = False
    reports_done: bool = False
    closer: Callable[[], Any] | None = None  # called once by close(): what shuts the engine down, if anything

    async def collect(self, rows: list[dict[str, Any]], step: int, *, greedy: bool = False,
                      on_done: OnDone | None = None) -> list[Trajectory]:
        kwargs: dict[str, Any] = {}
        if greedy:
            kwargs["greedy"] = True
        if on_done is not None and self.reports_done:
            kwargs["on_done"] = on_done
        return list(await _resolved(self.fn(rows, step, **kwargs)))

    async def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        if self.engine is not None:
            await _resolved(self.engine.update_weights(state_dict))

    async def start(self, replicas: Sequence[Any] = ()) -> None:
        if replicas:
            raise ValueError("a CallableRollout brings its own engine; it cannot use the trainer ranks' replicas "
                             "(set actor_rollout_ref.rollout.placement=driver)")

    async def step_metrics(self) -> dict[str, float]:
        return {}

    def weight_sync(self, version: int) -> AbstractAsyncContextManager[None]:
        return unversioned_sync(version)

    async def close(self) -> None:
        closer, self.closer = self.closer, None
        if closer is not None:
            await _resolved(closer())


def as_rollout(made: Rollout | tuple[CollectFn, WeightReceiver | None]) -> Rollout:
    """A factory's result as a `Rollout`: factories written before the protocol return `(collect, engine)`."""
    if isinstance(made, tuple):
        collect, engine = made
        # The factory built the engine, so the run closes it; such engines had no declared interface to say so.
        return CallableRollout(collect, engine, closer=getattr(engine, "close", None))
    return made


def check_groups(rows: Sequence[dict[str, Any]], trajectories: Sequence[Trajectory]) -> None:
    if not trajectories:
        raise RuntimeError(f"collect() returned no trajectories for {len(rows)} rows")
    groups = {t.group_id for t in trajectories}
    if len(groups) > len(rows):
        raise RuntimeError(
            f"collect() returned {len(groups)} groups for {len(rows)} rows: the samples of one row must share "
            f"a group_id (GRPO/RLOO compare samples within a group)")
