"""ReMax's greedy baseline rollout through RLTrainer.fit, and group ids across dynamic sampling's batches."""

from __future__ import annotations

import json

import pytest

from agentgym.errors import ConfigError
from agentgym.trajectory import Trajectory
from agentgym.rollout.protocol import CallableRollout
from agentgym.trainer.driver import RLTrainer

ROWS = [{"id": i, "prompt": [{"role": "user", "content": "hi"}]} for i in range(2)]


def _traj(gid: str, k: int, score: float, *, token: int = 5) -> Trajectory:
    return Trajectory(uid=f"{gid}-{k}", group_id=gid, prompt_ids=[2, 3], response_ids=[token + k, 6], loss_mask=[1, 1],
                      rollout_logprobs=[-1.0, -1.0], final_score=score)


class RecordingCollect:
    """Sampled: row i's two samples score 1 and 0. Greedy: row 0 scores 0.25, row 1 scores 1."""

    def __init__(self):
        self.calls: list[tuple[list[int], bool]] = []

    def __call__(self, rows, step, *, greedy=False):
        self.calls.append(([r["id"] for r in rows], greedy))
        if greedy:
            return [_traj(f"step{step}-greedy-{i}", 0, [0.25, 1.0][r["id"]], token=20) for i, r in enumerate(rows)]
        return [_traj(f"step{step}-{i}", k, float(k == 0)) for i, r in enumerate(rows) for k in range(2)]


async def test_remax_trains_on_the_samples_against_the_greedy_reward(config_for, tmp_path):
    collect = RecordingCollect()
    config = config_for("trainer.use_ray=false", "algorithm.adv_estimator=remax", "actor_rollout_ref.rollout.n=2",
                        "data.shuffle=false", "trainer.total_training_steps=1", f"trainer.default_local_dir={tmp_path}",
                        "trainer.logger=[jsonl]")
    trainer = RLTrainer(config, rollout=CallableRollout(collect, samples_greedy=True), dataset=ROWS)
    try:
        [metrics] = await trainer.fit()
    finally:
        trainer.close()
    assert collect.calls == [([0, 1], False), ([0, 1], True)], "one greedy response per prompt, after the samples"
    # advantages: row 0: 1 - .25, 0 - .25; row 1: 1 - 1, 0 - 1 (on each of the 2 tokens)
    assert metrics["critic/advantages/max"] == pytest.approx(0.75)
    assert metrics["critic/advantages/min"] == pytest.approx(-1.0)
    assert metrics["critic/advantages/mean"] == pytest.approx((0.75 - 0.25 + 0.0 - 1.0) / 4)
    assert metrics["remax/baseline_score/mean"] == pytest.approx(0.625)
    assert metrics["response/model_tokens"] == 8, "the greedy responses are not trained on"
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert "timing_s/remax_greedy" in logged


def test_remax_needs_a_collect_that_can_sample_greedily(config_for):
    def collect(rows, step):
        return []

    with pytest.raises(ConfigError, match="greedy"):
        RLTrainer(config_for("trainer.use_ray=false", "algorithm.adv_estimator=remax"), collect=collect, dataset=ROWS)


async def test_remax_train_step_without_baselines_says_why(config_for):
    trainer = RLTrainer(config_for("trainer.use_ray=false", "algorithm.adv_estimator=remax"))
    try:
        with pytest.raises(ValueError, match="no greedy baseline"):
            await trainer.train_step([_traj("g", 0, 1.0), _traj("g", 1, 0.0)], step=1)
    finally:
        trainer.close()


async def test_dynamic_sampling_keeps_groups_of_different_batches_apart(config_for):
    """collect(rows, step) names groups by the row's place in its batch, so a step's second batch reuses the first
    batch's ids; without renaming, GRPO would pool two prompts' samples into one group."""
    rows = [{"id": i, "prompt": [{"role": "user", "content": "hi"}]} for i in range(4)]

    def collect(rows, step):
        # rows 0 and 2 are flat, rows 1 and 3 informative: each batch keeps its second group, `step1-1`
        return [_traj(f"step{step}-{i}", k, float(k == 0 and r["id"] % 2 == 1)) for i, r in enumerate(rows)
                for k in range(2)]

    trainer = RLTrainer(config_for("trainer.use_ray=false", "data.shuffle=false", "actor_rollout_ref.rollout.n=2",
                                   "algorithm.filter_groups.enable=true"), collect=collect, dataset=rows)
    trajectories, metrics = await trainer._collect_step(1)
    groups = [t.group_id for t in trajectories]
    assert groups == ["step1-1", "step1-1", "step1-1~2", "step1-1~2"]
    assert len({t.uid for t in trajectories}) == 4
    assert metrics["dynamic_sampling/extra_groups_sampled"] == 2


async def test_the_default_rollout_samples_one_greedy_response_per_row(tiny_model_dir):
    """make_rollout's collect(greedy=True): the real engine at temperature 0, one trajectory per row, in order."""
    from agentgym.config import load_config
    from agentgym.rollout.build import make_rollout
    from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
    from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows

    cfg = load_config(None, [
        f"actor_rollout_ref.model.path={tiny_model_dir}", "trainer.device=cpu", "actor_rollout_ref.rollout.n=3",
        "data.max_response_length=12", "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=1",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
    ])
    rows = make_rows(ArithmeticTaskConfig(num_rows=2, seed=5))
    rollout = make_rollout(cfg)
    try:
        sampled = await rollout.collect(rows, 4)
        first = await rollout.collect(rows, 4, greedy=True)
        again = await rollout.collect(rows, 4, greedy=True)
    finally:
        await rollout.close()
    assert len(sampled) == 6 and [t.group_id for t in first] == ["step4-greedy-0", "step4-greedy-1"]
    assert [t.response_ids for t in first] == [t.response_ids for t in again], "temperature 0 repeats"
    assert all(t.prompt_ids == s.prompt_ids for t, s in zip(first, sampled[::3]))
