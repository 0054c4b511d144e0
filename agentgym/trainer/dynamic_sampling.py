"""DAPO's dynamic sampling (Yu et al. 2025, sec. 3.2): train only on groups whose samples' rewards differ.

A group whose rewards are all equal has zero group-relative advantage everywhere, so it only dilutes the batch.
Batches of prompts are sampled until `target_groups` informative groups are in hand (the surplus of the last batch
is dropped), at most `max_num_gen_batches` batches per step (<= 0: no bound). verl's keys:
algorithm.filter_groups.{enable,metric,max_num_gen_batches}.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgym.trajectory import Trajectory


def informative_groups(trajectories: Sequence[Trajectory], scores: Sequence[float]) -> list[Hashable]:
    """Group ids, in first-seen order, whose samples do not all share one score (a group of one never qualifies)."""
    by_group: dict[Hashable, list[float]] = defaultdict(list)
    for traj, score in zip(trajectories, scores, strict=True):
        by_group[traj.group_id].append(float(score))
    return [gid for gid, values in by_group.items() if len(values) > 1 and len(set(values)) > 1]


@dataclass
class FilteredBatch:
    trajectories: list[Trajectory]
    rows: list[dict[str, Any]] = field(default_factory=list)
    num_gen_batches: int = 0
    groups_sampled: int = 0
    groups_kept: int = 0

    def metrics(self, target_groups: int) -> dict[str, float]:
        return {
            "dynamic_sampling/num_gen_batches": float(self.num_gen_batches),
            "dynamic_sampling/groups_sampled": float(self.groups_sampled),
            "dynamic_sampling/extra_groups_sampled": float(self.groups_sampled - target_groups),
            "dynamic_sampling/groups_kept": float(self.groups_kept),
        }


async def collect_informative(
    next_rows: Callable[[], list[dict[str, Any]]],
    collect: Callable[[list[dict[str, Any]]], Awaitable[list[Trajectory]]],
    score: Callable[[Trajectory], float],
    target_groups: int,
    max_num_gen_batches: int,
) -> FilteredBatch:
    out = FilteredBatch([])
    while True:
        rows = next_rows()
        trajectories = list(await collect(rows))
        out.num_gen_batches += 1
        out.rows.extend(rows)
        out.groups_sampled += len({t.group_id for t in trajectories})
        keep = informative_groups(trajectories, [score(t) for t in trajectories])
        keep = keep[: target_groups - out.groups_kept]
        kept = set(keep)
        out.trajectories.extend(t for t in trajectories if t.group_id in kept)
        out.groups_kept += len(keep)
        if out.groups_kept >= target_groups:
            return out
        if 0 < max_num_gen_batches <= out.num_gen_batches:
            raise RuntimeError(
                f"dynamic sampling found {out.groups_kept} of {target_groups} groups with differing rewards in "
                f"{out.num_gen_batches} batches (algorithm.filter_groups.max_num_gen_batches={max_num_gen_batches}); "
                f"the tasks are too easy or too hard for the model: raise max_num_gen_batches (<= 0: no bound), "
                f"filter the data, or set algorithm.filter_groups.enable=false")
