"""Failed trajectories: shown in the console with counts and the first error; too many (or all) stop the run with
that error instead of an IndexError deep in the advantage code."""

from __future__ import annotations

import dataclasses

import pytest

from agentgym.errors import RolloutFailed
from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.trainer.driver import RLTrainer
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows

from .conftest import toy_trajectories


async def _rollout_with_unknown_interaction(n_rows: int):
    rows = make_rows(ArithmeticTaskConfig(num_rows=n_rows, seed=1))
    for row in rows:
        row["extra_info"]["interaction_kwargs"]["name"] = "no_such_teacher"
    tokenizer = tiny_tokenizer()
    loop = AgentLoop(ScriptedEngine(tokenizer, lambda conversation, sid: "42"), tokenizer,
                     build_tools(load_tool_specs(TOOL_CONFIG)), load_interactions(INTERACTION_CONFIG),
                     AgentLoopConfig())
    return await loop.run_batch(rows, n=2)


async def test_a_step_where_every_trajectory_failed_stops_with_the_first_error(config_for):
    trajectories = await _rollout_with_unknown_interaction(2)
    assert all(t.failed for t in trajectories)
    trainer = RLTrainer(config_for("trainer.use_ray=false"))
    with pytest.raises(RolloutFailed) as caught:
        await trainer.train_step(trajectories, step=1)
    text = str(caught.value)
    assert "step 1: 4 of 4 trajectories failed (100%)" in text and "no_such_teacher" in text
    assert "nothing to train on" in text
    assert trainer.workers is None, "stopped before any model work"


async def test_failed_fraction_above_the_bound_stops_the_run(config_for):
    failed = await _rollout_with_unknown_interaction(2)
    good = toy_trajectories()
    batch = failed[:3] + good[:1]
    trainer = RLTrainer(config_for("trainer.use_ray=false", "trainer.max_failed_fraction=0.5"))
    with pytest.raises(RolloutFailed, match=r"3 of 4 trajectories failed \(75%\).*trainer.max_failed_fraction=0.5"):
        await trainer.train_step(batch, step=2)


async def test_a_few_failures_are_shown_in_the_console_and_the_step_trains(config_for, capfd):
    good = toy_trajectories()
    broken = dataclasses.replace(good[1], response_ids=[], loss_mask=[], rollout_logprobs=[], turns=[],
                                 finish_reason="failed", error="RuntimeError: engine exploded\nTraceback ...")
    trainer = RLTrainer(config_for("trainer.use_ray=false"))
    try:
        metrics = await trainer.train_step([good[0], broken, good[2], good[3]], step=1)
    finally:
        trainer.close()
    assert metrics["response/failed_fraction"] == 0.25
    err = capfd.readouterr().err
    assert "step 1: 1 of 4 trajectories failed (25%): 1x RuntimeError: engine exploded" in err
    assert "First (trajectory a1): RuntimeError: engine exploded" in err
