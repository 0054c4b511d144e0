"""trainer.rollout_mode through RLTrainer.fit: when each step's rollout starts relative to the weight syncs, the
staleness each step trains at, the groups async mode drops, async with max_staleness 0 being the sync run, and the
config errors."""

from __future__ import annotations

import asyncio
import json

import pytest

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.rollout.protocol import CallableRollout
from agentgym.trainer.driver import RLTrainer
from agentgym.trajectory import Trajectory

ROWS = [{"id": i, "prompt": [{"role": "user", "content": "hi"}]} for i in range(8)]


def _traj(gid: str, k: int, score: float) -> Trajectory:
    return Trajectory(uid=f"{gid}-{k}", group_id=gid, prompt_ids=[2, 3], response_ids=[5 + k, 6, 7],
                      loss_mask=[1, 1, 1], rollout_logprobs=[-1.0, -1.0, -1.0], final_score=score)


class Timeline:
    """A rollout and a weight receiver that write what happens, in order, into one list."""

    def __init__(self, *, hold: int | None = None, release_after_sync: int = 0):
        self.events: list[tuple[str, int]] = []
        self.syncs = 0
        self.hold, self.release_after_sync = hold, release_after_sync
        self.released = asyncio.Event()
        self.rows: dict[int, list[int]] = {}  # launch -> the ids of the rows it collected

    async def collect(self, rows, step):
        self.events.append(("collect", step))
        self.rows[step] = [row["id"] for row in rows]
        if step == self.hold:  # a straggler: this launch finishes only after some weight syncs
            await self.released.wait()
        await asyncio.sleep(0)
        self.events.append(("collected", step))
        return [_traj(f"step{step}-{i}", k, float(k == 0)) for i, _ in enumerate(rows) for k in range(2)]

    def update_weights(self, state_dict):
        self.syncs += 1
        self.events.append(("sync", self.syncs))
        if self.syncs == self.release_after_sync:
            self.released.set()


def _config(config_for, tmp_path, *overrides):
    return config_for("trainer.use_ray=false", "actor_rollout_ref.rollout.n=2", "data.shuffle=false",
                      f"trainer.default_local_dir={tmp_path}", "trainer.logger=[jsonl]", *overrides)


async def _fit(config, timeline: Timeline) -> list[dict[str, float]]:
    trainer = RLTrainer(config, rollout=CallableRollout(timeline.collect, timeline), dataset=ROWS,
                        weight_transport="state_dict")
    try:
        return await trainer.fit()
    finally:
        trainer.close()


async def test_sync_collects_each_step_after_the_previous_weight_sync(config_for, tmp_path):
    timeline = Timeline()
    history = await _fit(_config(config_for, tmp_path, "trainer.total_training_steps=3"), timeline)
    # sync 1 is the initial one (start_rollout); sync k+1 follows step k's update
    assert timeline.events == [("sync", 1), ("collect", 1), ("collected", 1), ("sync", 2), ("collect", 2),
                               ("collected", 2), ("sync", 3), ("collect", 3), ("collected", 3), ("sync", 4)]
    assert [m["rollout/staleness/max"] for m in history] == [0.0, 0.0, 0.0]
    assert "timing_s/weight_sync_pause" not in history[0]


async def test_one_step_off_runs_the_next_rollout_during_the_update(config_for, tmp_path):
    timeline = Timeline()
    history = await _fit(_config(config_for, tmp_path, "trainer.total_training_steps=3",
                                 "trainer.rollout_mode=one_step_off"), timeline)
    events = timeline.events
    # step k+1's collection starts before step k's weight sync, and none is launched past the last step
    assert events.index(("collect", 2)) < events.index(("sync", 2))
    assert events.index(("collect", 3)) < events.index(("sync", 3))
    assert events.index(("collected", 1)) < events.index(("collect", 2)), "one rollout ahead, not two"
    assert ("collect", 4) not in events
    assert [m["rollout/staleness/max"] for m in history] == [0.0, 1.0, 1.0]
    assert [m["rollout/policy_version"] for m in history] == [0.0, 1.0, 2.0]
    assert all(m["rollout/staleness/dropped_groups"] == 0 for m in history)
    assert "timing_s/weight_sync_pause" in history[0] and "timing_s/iteration" in history[0]


async def test_async_drops_a_straggler_past_max_staleness_and_counts_it(config_for, tmp_path):
    """max_staleness 1: launches 1 and 2 start together; launch 1 is held until after the second update, so by the
    time it arrives it is two versions old: its 2 groups are dropped, a new launch takes their place, and no step
    trains on anything staler than 1."""
    timeline = Timeline(hold=1, release_after_sync=3)  # sync 3 = the one after step 2
    history = await _fit(_config(config_for, tmp_path, "trainer.total_training_steps=3", "trainer.rollout_mode=async",
                                 "trainer.max_staleness=1", "trainer.save_freq=1"), timeline)
    assert timeline.events[:3] == [("sync", 1), ("collect", 1), ("collect", 2)]
    # Step 1 trained launch 2; the held launch 1 and launch 3 (started by the first sync) were in flight: a resume
    # from step 1 collects their rows again, and not launch 2's.
    state = json.loads((tmp_path / "global_step_1" / "trainer_state.json").read_text())
    assert [ROWS[i]["id"] for i in state["data"]["carry"]] == timeline.rows[1] + timeline.rows[3]
    assert max(m["rollout/staleness/max"] for m in history) <= 1
    assert sum(m["rollout/staleness/dropped_groups"] for m in history) == 2
    assert sum(m["rollout/staleness/dropped_trajectories"] for m in history) == 4
    assert history[-1]["rollout/staleness/dropped_groups_total"] == 2
    # three steps need three launches; the fourth is the dropped groups' replacement
    assert ("collect", 4) in timeline.events and ("collect", 5) not in timeline.events


async def test_async_with_max_staleness_zero_keeps_to_the_sync_order(config_for, tmp_path):
    timeline = Timeline()
    await _fit(_config(config_for, tmp_path, "trainer.total_training_steps=3", "trainer.rollout_mode=async",
                       "trainer.max_staleness=0"), timeline)
    assert timeline.events == [("sync", 1), ("collect", 1), ("collected", 1), ("sync", 2), ("collect", 2),
                               ("collected", 2), ("sync", 3), ("collect", 3), ("collected", 3), ("sync", 4)]


async def test_async_syncs_every_trigger_parameter_sync_step_updates(config_for, tmp_path):
    """k=2, max_staleness 0: two collections at a time from one version, trained over two steps, then one sync;
    versions count syncs (and the last step syncs too, so the rollout ends with the final weights)."""
    timeline = Timeline()
    history = await _fit(_config(config_for, tmp_path, "trainer.total_training_steps=5", "trainer.rollout_mode=async",
                                 "trainer.max_staleness=0", "trainer.trigger_parameter_sync_step=2"), timeline)
    events = timeline.events
    assert [e for e in events if e[0] == "sync"] == [("sync", i) for i in range(1, 5)], "start, after 2, 4 and 5"
    assert events[:3] == [("sync", 1), ("collect", 1), ("collect", 2)], "a version's two collections run together"
    assert events.index(("collect", 3)) > events.index(("sync", 2)), "the next pair waits for the sync"
    assert events.index(("collect", 5)) > events.index(("sync", 3))
    assert [m["rollout/policy_version"] for m in history] == [0.0, 0.0, 1.0, 1.0, 2.0]
    assert all(m["rollout/staleness/max"] == 0 and m["rollout/staleness/dropped_groups"] == 0 for m in history)


async def test_async_staleness_counts_syncs_with_trigger_parameter_sync_step(config_for, tmp_path):
    """k=2, max_staleness 1: collections for four steps (two versions) start at once; every step trains within one
    version of the rollout's weights."""
    timeline = Timeline()
    history = await _fit(_config(config_for, tmp_path, "trainer.total_training_steps=6", "trainer.rollout_mode=async",
                                 "trainer.max_staleness=1", "trainer.trigger_parameter_sync_step=2"), timeline)
    assert timeline.events[:5] == [("sync", 1), ("collect", 1), ("collect", 2), ("collect", 3), ("collect", 4)]
    assert [m["rollout/policy_version"] for m in history] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert [m["rollout/staleness/max"] for m in history] == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert timeline.syncs == 4


async def test_a_resumed_one_step_off_run_collects_the_rows_in_flight_again_and_ends_at_its_step(config_for, tmp_path):
    """Run A (4 steps, one step off) saves at step 2 while step 3's collection runs. Run B resumes from that
    checkpoint: it restarts the pipeline at version 2 (step 3 trains a fresh rollout of the step-2 weights, staleness
    0), collects step 3's rows again (the checkpoint carried them) and step 4's after them, so A's steps 1-2 and B's
    steps 3-4 train exactly A's rows, none twice and none skipped."""
    first = Timeline()
    overrides = ("trainer.total_training_steps=4", "trainer.rollout_mode=one_step_off", "trainer.save_freq=2")
    history_a = await _fit(_config(config_for, tmp_path / "a", *overrides), first)
    assert [m["rollout/policy_version"] for m in history_a] == [0.0, 1.0, 2.0, 3.0]
    state = json.loads((tmp_path / "a" / "global_step_2" / "trainer_state.json").read_text())
    assert state["policy_version"] == 2
    assert [ROWS[i]["id"] for i in state["data"]["carry"]] == first.rows[3], "step 3's rows were in flight"

    second = Timeline()
    history_b = await _fit(_config(config_for, tmp_path / "b", *overrides, "trainer.resume_mode=resume_path",
                                   f"trainer.resume_from_path={tmp_path / 'a' / 'global_step_2'}"), second)
    assert len(history_b) == 2, "steps 3 and 4 were left"
    assert sorted(second.rows) == [3, 4], "the launches are numbered by the steps they are for"
    assert second.rows == {3: first.rows[3], 4: first.rows[4]}
    assert [m["rollout/policy_version"] for m in history_b] == [2.0, 3.0]
    assert [m["rollout/staleness/max"] for m in history_b] == [0.0, 1.0]
    assert second.syncs == 3, "at the start, after step 3 and after step 4"
    final = json.loads((tmp_path / "b" / "global_step_4" / "trainer_state.json").read_text())
    assert final["global_step"] == 4 and final["policy_version"] == 4 and "carry" not in final["data"]


def test_carried_rows_come_first_and_the_loader_goes_on_where_it_was():
    from agentgym.rows import PromptBatches

    batches = PromptBatches(ROWS, 3, shuffle=False)
    batches.next_indices()
    saved = batches.state_dict(carry=[1, 2])  # rows 1 and 2 were in flight
    assert saved == {"epoch": 0, "position": 3, "carry": [1, 2]}
    resumed = PromptBatches(ROWS, 3, shuffle=False)
    resumed.load_state_dict(saved)
    assert [resumed.next_indices() for _ in range(3)] == [[1, 2, 3], [4, 5, 6], [0, 1, 2]]
    assert resumed.state_dict() == {"epoch": 1, "position": 3}, "nothing carried: the state a sync run saves"


async def test_a_checkpoint_between_syncs_counts_its_weights_as_the_next_version(config_for, tmp_path):
    """trigger_parameter_sync_step=2, saved at step 3 (not a sync): the rollout still holds version 1, the
    checkpoint's weights are newer, so a run resumed from them starts at version 2 and syncs two updates later."""
    overrides = ("trainer.total_training_steps=5", "trainer.rollout_mode=async", "trainer.max_staleness=0",
                 "trainer.trigger_parameter_sync_step=2", "trainer.save_freq=3")
    await _fit(_config(config_for, tmp_path / "a", *overrides), Timeline())
    state = json.loads((tmp_path / "a" / "global_step_3" / "trainer_state.json").read_text())
    assert state["policy_version"] == 2
    resumed = Timeline()
    history = await _fit(_config(config_for, tmp_path / "b", *overrides, "trainer.resume_mode=resume_path",
                                 f"trainer.resume_from_path={tmp_path / 'a' / 'global_step_3'}"), resumed)
    assert [m["rollout/policy_version"] for m in history] == [2.0, 2.0]
    assert resumed.syncs == 2, "at the start and after step 5 (two updates after the resume, and the last)"


def _agent_config(tiny_model_dir, tmp_path, *overrides):
    from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG

    return load_config(None, [
        f"actor_rollout_ref.model.path={tiny_model_dir}", "actor_rollout_ref.model.attn_implementation=eager",
        "trainer.device=cpu", "trainer.use_ray=false", "data.train_batch_size=2", "data.shuffle=false",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.optim.lr=1e-2",
        "actor_rollout_ref.rollout.n=2", "data.max_response_length=10", "data.seed=3",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2", "trainer.total_training_steps=2",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
        f"trainer.default_local_dir={tmp_path}", "trainer.logger=[jsonl]", f"trainer.rollout_data_dir={tmp_path}/data",
        *overrides])


async def _fit_agent(config) -> tuple[list[dict[str, float]], list[list[Trajectory]]]:
    from agentgym.rollout.build import make_rollout
    from agentgym.rollout.trajectory_io import read_jsonl
    from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows

    rows = make_rows(ArithmeticTaskConfig(num_rows=4, seed=5))
    rollout = make_rollout(config)
    trainer = RLTrainer(config, rollout=rollout, dataset=rows)
    try:
        history = await trainer.fit()
    finally:
        await rollout.close()
        trainer.close()
    data = config.trainer.rollout_data_dir
    return history, [read_jsonl(f"{data}/{step}.jsonl") for step in (1, 2)]


async def test_async_with_max_staleness_zero_is_the_sync_run(tiny_model_dir, tmp_path):
    """The real agent loop and engine, same seed: the same trajectories (ids, logprobs, versions) and the same
    update figures, step by step."""
    sync_history, sync_steps = await _fit_agent(_agent_config(tiny_model_dir, tmp_path / "sync"))
    async_history, async_steps = await _fit_agent(_agent_config(tiny_model_dir, tmp_path / "async",
                                                                "trainer.rollout_mode=async", "trainer.max_staleness=0"))
    for ours, theirs in zip(sync_steps, async_steps):
        assert [(t.uid, t.response_ids, t.rollout_logprobs, t.token_versions) for t in ours] == \
               [(t.uid, t.response_ids, t.rollout_logprobs, t.token_versions) for t in theirs]
    assert [set(t.sampled_versions) for t in sync_steps[1]] == [{1}] * len(sync_steps[1]), "step 2 samples version 1"
    for ours, theirs in zip(sync_history, async_history):
        for key in ("actor/pg_loss", "actor/grad_norm", "critic/score/mean", "actor/entropy"):
            assert ours[key] == theirs[key], key


def test_rollout_mode_config_errors(config_for):
    with pytest.raises(ConfigError, match=r"max_staleness >= 1 .*override `trainer.rollout_mode=one_step_off`"):
        config_for("trainer.rollout_mode=one_step_off", "trainer.max_staleness=0")
    with pytest.raises(ConfigError, match="partial_rollout=true pauses"):
        config_for("trainer.partial_rollout=true")
    with pytest.raises(ConfigError, match="max_staleness"):
        config_for("trainer.rollout_mode=async", "trainer.max_staleness=-1")
    for mode in ("sync", "one_step_off"):
        with pytest.raises(ConfigError, match=f"trigger_parameter_sync_step=2 .*rollout_mode={mode} syncs after every"):
            config_for(f"trainer.rollout_mode={mode}", "trainer.trigger_parameter_sync_step=2")
    with pytest.raises(ConfigError, match="trigger_parameter_sync_step"):
        config_for("trainer.rollout_mode=async", "trainer.trigger_parameter_sync_step=0")
    # agent-worker actors run under every mode: their replicas version the calls (tests/scale/test_agent_workers.py)
    assert config_for("trainer.rollout_mode=async", "actor_rollout_ref.rollout.agent.num_workers=2")
    with pytest.raises(ConfigError, match="greedy baseline"):
        RLTrainer(config_for("trainer.use_ray=false", "trainer.rollout_mode=one_step_off",
                             "algorithm.adv_estimator=remax"),
                  rollout=CallableRollout(lambda rows, step: [], samples_greedy=True), dataset=ROWS)
