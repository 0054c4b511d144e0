"""Run a step's calls one after another on each worker group, and the groups at the same time.

Why: a critic or reference on a pool of its own (`trainer.mapping`) has devices and a process group of its own, so
its forwards and its update need not wait for the actor's (docs/scale.md). Calls on one group keep the order the
sequential step gives them: the same model and optimizer see the same calls in the same order, and no call draws
random numbers another group's call could shift, so the results are the sequential step's to the bit. Roles that
share a group (colocated) stay strictly one after another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GroupCall:
    """One piece of a step's work and the worker group whose ranks run it (`run` is awaited once)."""

    group: Any
    run: Callable[[], Awaitable[Any]]


async def run_by_group(calls: Sequence[GroupCall], *, concurrent: bool = True) -> list[Any]:
    """Each call after the calls before it on the same group (the same object); with `concurrent`, the groups'
    sequences at once, else every call in the order given. Results in the order given. A failing call cancels the
    other groups' remaining calls and its error is raised as it is."""
    results: list[Any] = [None] * len(calls)
    lanes: dict[int, list[int]] = {}
    for index, call in enumerate(calls):
        lanes.setdefault(id(call.group), []).append(index)

    async def lane(indices: Sequence[int]) -> None:
        for index in indices:
            results[index] = await calls[index].run()

    if not concurrent or len(lanes) < 2:
        await lane(range(len(calls)))
        return results
    tasks = [asyncio.ensure_future(lane(indices)) for indices in lanes.values()]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return results
