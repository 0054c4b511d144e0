"""verl's reward files run unchanged: compute_score(data_source, solution_str, ground_truth, extra_info) gets what
verl's reward managers pass; dict results give metrics; a raising function costs one trajectory 0, not the run."""

import asyncio
import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.trajectory import Trajectory, TurnSpan
from agentgym.trainer.rewards import RewardScorer
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG

VERL_REWARD = '''
import json, os

def compute_score(data_source, solution_str, ground_truth, extra_info=None, bonus=0.0):
    with open(os.environ["REWARD_LOG"], "a") as f:
        f.write(json.dumps({"data_source": data_source, "solution_str": solution_str, "ground_truth": ground_truth,
                            "extra_info": extra_info, "bonus": bonus}) + "\\n")
    if "boom" in solution_str:
        raise RuntimeError("cannot parse the answer")
    return {"score": float(ground_truth in solution_str) + bonus, "length": len(solution_str)}
'''


def _trajectory(tokenizer, text: str, ground_truth: str) -> Trajectory:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return Trajectory(uid=text, group_id="g", prompt_ids=[1, 2], response_ids=ids + [tokenizer.eos_token_id],
                      loss_mask=[1] * (len(ids) + 1), rollout_logprobs=[0.0] * (len(ids) + 1),
                      turns=[TurnSpan("assistant", 0, 2), TurnSpan("tool", 2, 3), TurnSpan("assistant", 3, len(ids) + 1)],
                      tool_rewards=[0.25], interaction_rewards=[0.0, 1.0],
                      tool_metrics=[{"name": "calculator", "reward": 0.25}],
                      extra_info={"index": 7}, row_info={"data_source": "openai/gsm8k", "ability": "math",
                                                         "reward_model": {"style": "rule", "ground_truth": ground_truth}})


@pytest.fixture
def reward_file(tmp_path, monkeypatch):
    path = tmp_path / "my_reward.py"
    path.write_text(VERL_REWARD)
    monkeypatch.setenv("REWARD_LOG", str(tmp_path / "calls.jsonl"))
    return path


def test_verl_compute_score_gets_what_verl_passes(reward_file, tmp_path, tiny_model_dir):
    config = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}",
                                f"custom_reward_function.path={reward_file}",
                                "+custom_reward_function.reward_kwargs.bonus=0.5"])
    scorer = RewardScorer.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trajs = [_trajectory(tokenizer, "so the answer is 42", "42"), _trajectory(tokenizer, "it is 41", "42")]
    scores, metrics = asyncio.run(scorer.score(trajs))
    assert scores == [1.5, 0.5]
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    first = calls[0]
    assert first["data_source"] == "openai/gsm8k" and first["ground_truth"] == "42" and first["bonus"] == 0.5
    assert first["solution_str"] == "so the answer is 42"  # decoded, special tokens (the eos) skipped
    assert first["extra_info"] == {"index": 7, "num_turns": 4,
                                   "rollout_reward_scores": {"calculator": [0.25], "user_turn_rewards": [0.0, 1.0]}}
    assert trajs[0].extra_info == {"index": 7}  # the row's extra_info is not changed for the next user
    assert metrics == {"reward/extra/length": (len("so the answer is 42") + len("it is 41")) / 2}


def test_a_raising_reward_scores_zero_and_says_why(reward_file, tiny_model_dir):
    config = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", f"custom_reward_function.path={reward_file}"])
    scorer = RewardScorer.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trajs = [_trajectory(tokenizer, "boom 42", "42"), _trajectory(tokenizer, "42", "42")]
    no_truth = _trajectory(tokenizer, "42", "42")
    no_truth.row_info = {"data_source": "x"}
    scores, metrics = asyncio.run(scorer.score(trajs + [no_truth]))
    assert scores == [0.0, 1.0, 0.0]
    assert metrics["reward/errors"] == 2.0
    assert trajs[0].extra_info["reward_error"] == "RuntimeError: cannot parse the answer"
    assert "reward_model.ground_truth" in no_truth.extra_info["reward_error"]


def test_trajectory_functions_and_bad_results(tmp_path):
    scorer = RewardScorer.of_function(lambda t: {"score": 2.0, "format": 1} if t.uid == "a" else {"acc": 1.0})
    a, b = (Trajectory(uid=u, group_id="g", prompt_ids=[1]) for u in "ab")
    scores, metrics = asyncio.run(scorer.score([a, b]))
    assert scores == [2.0, 0.0] and metrics["reward/extra/format"] == 1.0
    assert "without a `score` key" in b.extra_info["reward_error"]
    half = tmp_path / "half.py"
    half.write_text("def compute_score(solution_str, ground_truth):\n    return 0.0\n")
    cfg = load_config(None, [f"custom_reward_function.path={half}"])
    with pytest.raises(ConfigError, match="lacks parameter"):
        RewardScorer.from_config(cfg)


def test_main_ppo_trains_on_a_verl_reward_file(reward_file, tmp_path, tiny_model_dir):
    rows = tmp_path / "rows.jsonl"
    subprocess.run([sys.executable, "-m", "agentgym_envs.arithmetic.data", "--out", str(rows), "--rows", "4"], check=True)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "agentgym.trainer.main_ppo",
        "algorithm.adv_estimator=grpo", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        f"data.train_files={rows}", "data.max_response_length=32", f"actor_rollout_ref.model.path={tiny_model_dir}",
        "actor_rollout_ref.rollout.n=2", "trainer.total_training_steps=1", "trainer.use_ray=false",
        "trainer.device=cpu", f"trainer.default_local_dir={run_dir}", "trainer.logger=[jsonl]",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2", f"custom_reward_function.path={reward_file}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 4 and {c["data_source"] for c in calls} == {"agentgym/arithmetic"}
    assert all(c["extra_info"]["num_turns"] >= 2 and "rollout_reward_scores" in c["extra_info"] for c in calls)
    expected = sum(float(c["ground_truth"] in c["solution_str"]) for c in calls) / 4
    assert abs(record["critic/score/mean"] - expected) < 1e-6
    assert abs(record["reward/extra/length"] - sum(len(c["solution_str"]) for c in calls) / 4) < 1e-6
