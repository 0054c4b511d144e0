"""DAPO dynamic sampling: only groups whose rewards differ are trained on; sampling goes on until the batch is full."""

import asyncio
import itertools

import pytest

from agentgym.trajectory import Trajectory
from agentgym.trainer.dynamic_sampling import collect_informative, informative_groups


def _traj(gid, k, score):
    return Trajectory(uid=f"{gid}-{k}", group_id=gid, prompt_ids=[1], response_ids=[2], loss_mask=[1],
                      rollout_logprobs=[0.0], final_score=score)


def test_informative_groups_drop_flat_and_single_groups():
    trajs = [_traj("a", 0, 1.0), _traj("a", 1, 1.0), _traj("b", 0, 0.0), _traj("b", 1, 1.0), _traj("c", 0, 0.5)]
    assert informative_groups(trajs, [t.final_score for t in trajs]) == ["b"]


def _sampler(pattern):
    """Rows 0, 1, 2, ... (two per batch); row i's group scores come from pattern[i]."""
    counter = itertools.count()
    calls = []

    def next_rows():
        return [{"id": next(counter)} for _ in range(2)]

    async def collect(rows):
        calls.append([r["id"] for r in rows])
        return [_traj(str(r["id"]), k, s) for r in rows for k, s in enumerate(pattern[r["id"]])]

    return next_rows, collect, calls


def test_keeps_sampling_until_full_and_drops_the_surplus():
    # rows 0..5: flat, mixed, flat, flat, mixed, mixed -> needs 3 batches for 2 informative groups; row 5 is surplus
    pattern = [(1, 1), (0, 1), (0, 0), (1, 1), (1, 0), (0, 1)]
    next_rows, collect, calls = _sampler(pattern)
    out = asyncio.run(collect_informative(next_rows, collect, lambda t: t.final_score, 2, max_num_gen_batches=0))
    assert calls == [[0, 1], [2, 3], [4, 5]]
    assert sorted({t.group_id for t in out.trajectories}) == ["1", "4"]
    assert len(out.trajectories) == 4
    m = out.metrics(2)
    assert (m["dynamic_sampling/num_gen_batches"], m["dynamic_sampling/groups_sampled"]) == (3.0, 6.0)
    assert m["dynamic_sampling/extra_groups_sampled"] == 4.0


def test_max_num_gen_batches_bounds_the_search():
    next_rows, collect, calls = _sampler([(1, 1)] * 10)
    with pytest.raises(RuntimeError, match=r"0 of 2 groups .*max_num_gen_batches=3"):
        asyncio.run(collect_informative(next_rows, collect, lambda t: t.final_score, 2, max_num_gen_batches=3))
    assert len(calls) == 3
