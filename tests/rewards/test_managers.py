"""Reward managers by config: naive (per sample), batch (one call per batch), rate_limited (token bucket,
concurrency bound, timeout), and asynchronous scoring that starts as each episode ends."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.trajectory import Trajectory
from agentgym.trainer.rewards import RewardScorer
from agentgym_envs.arithmetic import INTERACTION_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows


def _trajs(n: int) -> list[Trajectory]:
    return [Trajectory(uid=f"t{i}", group_id=f"g{i // 2}", prompt_ids=[1], response_ids=[5] * (i + 1),
                       final_score=float(i),
                       row_info={"data_source": "src", "reward_model": {"ground_truth": str(i)}})
            for i in range(n)]


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "reward.py"
    path.write_text(text)
    return str(path)


BATCH_REWARD = '''
CALLS = []

def compute_score(data_sources, solution_strs, ground_truths, extra_infos, scale=1.0):
    CALLS.append(len(solution_strs))
    if any(g == "3" for g in ground_truths) and len(solution_strs) == 1:
        raise RuntimeError("batch of one")
    return [{"score": float(g) * scale, "n": len(solution_strs)} for g in ground_truths]
'''


def test_batch_manager_calls_verl_batch_form_once_per_batch(tmp_path, tiny_model_dir):
    path = _write(tmp_path, BATCH_REWARD)
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", f"custom_reward_function.path={path}",
                             "reward_model.reward_manager=batch", "+custom_reward_function.reward_kwargs.scale=2"])
    scorer = RewardScorer.from_config(cfg)
    trajs = _trajs(4)
    trajs[1].row_info = {"data_source": "src"}  # no ground truth: its own error, the others still scored
    scores, metrics = asyncio.run(scorer.score(trajs))
    module = scorer.terms[0].component.manager.function.fn.__globals__
    assert module["CALLS"] == [3]
    assert scores == [0.0, 0.0, 4.0, 6.0]
    assert metrics["reward/errors"] == 1.0 and metrics["reward/extra/n"] == 3.0
    assert "ground_truth" in trajs[1].extra_info["reward_error"]


def test_manager_and_function_form_must_agree(tmp_path, tiny_model_dir):
    batch = _write(tmp_path, BATCH_REWARD)
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", f"custom_reward_function.path={batch}"])
    with pytest.raises(ConfigError, match="reward_manager=batch"):
        RewardScorer.from_config(cfg)
    single = tmp_path / "single.py"
    single.write_text("def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return 1.0\n")
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", f"custom_reward_function.path={single}",
                             "reward_model.reward_manager=batch"])
    with pytest.raises(ConfigError, match="once per batch"):
        RewardScorer.from_config(cfg)
    with pytest.raises(ConfigError, match="reward_manager"):
        load_config(None, ["reward_model.reward_manager=prime_typo"])


def test_naive_manager_scores_each_sample_in_order():
    seen = []
    scorer = RewardScorer.of_function(lambda t: seen.append(t.uid) or t.final_score * 10)
    scores, _ = asyncio.run(scorer.score(_trajs(3)))
    assert scores == [0.0, 10.0, 20.0] and seen == ["t0", "t1", "t2"]


RATE_LIMITED = '''
import asyncio, time
STARTS = []
ACTIVE = [0, 0]

async def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    STARTS.append(time.monotonic())
    ACTIVE[0] += 1
    ACTIVE[1] = max(ACTIVE[1], ACTIVE[0])
    try:
        await asyncio.sleep(5.0 if ground_truth == "5" else 0.05)
    finally:
        ACTIVE[0] -= 1
    return 1.0
'''


def test_rate_limited_manager_bounds_rate_concurrency_and_time(tmp_path, tiny_model_dir):
    path = _write(tmp_path, RATE_LIMITED)
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", f"custom_reward_function.path={path}",
                             "reward_model.reward_manager=rate_limited", "reward_model.rate_limit.max_concurrent=2",
                             "reward_model.rate_limit.max_rpm=600", "reward_model.rate_limit.burst=2",
                             "reward_model.rate_limit.timeout=1.0"])
    scorer = RewardScorer.from_config(cfg)
    trajs = _trajs(6)
    start = time.monotonic()
    scores, metrics = asyncio.run(scorer.score(trajs))
    elapsed = time.monotonic() - start
    module = scorer.terms[0].component.manager.function.fn.__globals__
    starts = sorted(module["STARTS"])
    assert module["ACTIVE"][1] == 2, "never more than max_concurrent calls at once, and it used them"
    # 10 calls/s with a burst of 2: the 6th call starts no earlier than 0.4 s after the first.
    assert starts[-1] - starts[0] >= 0.4 - 0.02
    assert scores == [1.0] * 5 + [0.0]
    assert "within 1 s" in trajs[5].extra_info["reward_error"] and metrics["reward/errors"] == 1.0
    assert elapsed < 4.5, "the slow call was cut off at the timeout"
    assert metrics["reward/rate_limit/wait_s/max"] > 0


ASYNC_REWARD = '''
import asyncio, time
LOG = []

async def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    LOG.append(("start", time.monotonic()))
    await asyncio.sleep(0.3)
    LOG.append(("end", time.monotonic()))
    return float(ground_truth in solution_str)
'''


async def test_async_scoring_overlaps_the_rollout(tmp_path, tiny_model_dir):
    path = _write(tmp_path, ASYNC_REWARD)
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", f"custom_reward_function.path={path}",
                             "reward_model.launch_reward_fn_async=true"])
    scorer = RewardScorer.from_config(cfg)
    rows = make_rows(ArithmeticTaskConfig(num_rows=4, seed=1))
    tokenizer = tiny_tokenizer()
    engine = ScriptedEngine(tokenizer, lambda conversation, sid: "the answer is 42", delay_s=0.15)
    loop = AgentLoop(engine, tokenizer, {}, load_interactions(INTERACTION_CONFIG),
                     AgentLoopConfig(max_concurrent_episodes=1))
    trajectories = await loop.run_batch(rows, n=1, on_done=scorer.submit)
    rollout_end = time.monotonic()
    scores, _ = await scorer.score(trajectories)
    waited = time.monotonic() - rollout_end
    log = scorer.terms[0].component.manager.function.fn.__globals__["LOG"]
    starts = [t for kind, t in log if kind == "start"]
    assert len(starts) == 4
    assert min(starts) < rollout_end - 0.2, "the first trajectory was scored while the others were still rolling out"
    assert waited < 0.3 + 0.25, "score() only waited for the last trajectory's reward, not four in a row"
    truths = [r["reward_model"]["ground_truth"] for r in rows]
    assert scores == [float(g in "the answer is 42") for g in truths]


def test_async_scoring_without_the_flag_waits_for_the_step():
    scorer = RewardScorer.of_function(lambda t: 1.0)
    traj = _trajs(1)[0]

    async def run():
        scorer.submit(traj)
        assert scorer._memo == {}
        return await scorer.score([traj])

    assert asyncio.run(run())[0] == [1.0]


def test_unit_tests_in_the_sandbox_under_the_rate_limited_manager(sandbox, tmp_path, tiny_model_dir):
    """An expensive remote check: each response's code runs against the row's asserts in a real sandbox server."""
    from transformers import AutoTokenizer

    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}",
                             "custom_reward_function.path=agentgym.rewards.sandbox_tests",
                             f"+custom_reward_function.reward_kwargs.sandbox_url={sandbox.url}",
                             "+custom_reward_function.reward_kwargs.run_timeout=3",
                             "reward_model.reward_manager=rate_limited", "reward_model.rate_limit.max_concurrent=2",
                             "reward_model.rate_limit.max_rpm=600"])
    scorer = RewardScorer.from_config(cfg)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
    answers = ["```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```",
               "```python\ndef add(a, b):\n    while True: pass\n```"]
    trajs = [Trajectory(uid=f"c{i}", group_id="g", prompt_ids=[1], response_ids=tok.encode(a, add_special_tokens=False),
                        row_info={"data_source": "code", "reward_model": {"ground_truth": tests}})
             for i, a in enumerate(answers)]
    scores, metrics = asyncio.run(scorer.score(trajs))
    assert scores == [1.0, 0.0, 0.0]
    assert metrics["reward/extra/timed_out"] == pytest.approx(1 / 3)
    assert "reward/errors" not in metrics
    cfg_down = cfg.model_copy(deep=True)
    cfg_down.custom_reward_function.reward_kwargs["sandbox_url"] = "http://127.0.0.1:9"
    scores, metrics = asyncio.run(RewardScorer.from_config(cfg_down).score(trajs[:1]))
    assert scores == [0.0] and metrics["reward/errors"] == 1.0, "an unreachable sandbox is an error, not a wrong answer"
