"""`run_by_group`: calls on one group keep their order, different groups' calls run at once, results come back in
the order given, and a failing call's own error comes out with the other groups' calls cancelled."""

from __future__ import annotations

import asyncio

import pytest

from agentgym.trainer.group_lanes import GroupCall, run_by_group


class Group:
    """Stands for a worker group: records the calls made on it, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.log: list[str] = []


def _call(group: Group, label: str, *, before=None, after=None, log: list[str] | None = None) -> GroupCall:
    async def run() -> str:
        if before is not None:
            await before.wait()
        (log if log is not None else group.log).append(label)
        if after is not None:
            after.set()
        return f"{group.name}:{label}"
    return GroupCall(group, run)


async def test_calls_of_two_groups_run_at_once_and_keep_their_order_within_a_group():
    actor, critic = Group("actor"), Group("critic")
    critic_started, actor_started = asyncio.Event(), asyncio.Event()
    # The actor's first call waits for the critic's first, and the critic's second for the actor's first: in the
    # order given, one after another, this could never finish.
    calls = [_call(actor, "old_log_prob", before=critic_started, after=actor_started),
             _call(actor, "update_actor"),
             _call(critic, "values", after=critic_started),
             _call(critic, "update_critic", before=actor_started)]
    results = await asyncio.wait_for(run_by_group(calls), 30)
    assert results == ["actor:old_log_prob", "actor:update_actor", "critic:values", "critic:update_critic"]
    assert actor.log == ["old_log_prob", "update_actor"] and critic.log == ["values", "update_critic"]


@pytest.mark.parametrize("concurrent", [True, False])
async def test_one_group_or_concurrent_off_runs_everything_in_the_order_given(concurrent):
    actor, critic = Group("actor"), Group("critic")
    order: list[str] = []
    groups = [actor, actor, actor] if concurrent else [actor, critic, actor]
    calls = [_call(g, str(i), log=order) for i, g in enumerate(groups)]
    assert await run_by_group(calls, concurrent=concurrent) == [f"{g.name}:{i}" for i, g in enumerate(groups)]
    assert order == ["0", "1", "2"]


async def test_a_failing_call_raises_its_own_error_and_cancels_the_other_groups():
    actor, critic = Group("actor"), Group("critic")
    never = asyncio.Event()

    async def fail() -> None:
        raise ValueError("critic update failed")

    calls = [_call(actor, "waits", before=never), _call(actor, "after"), GroupCall(critic, fail)]
    with pytest.raises(ValueError, match="critic update failed"):
        await asyncio.wait_for(run_by_group(calls), 30)
    assert actor.log == [], "the actor's calls were cancelled, not run"
