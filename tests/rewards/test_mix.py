"""Mixed rewards: a YAML-declared weighted sum of named components, each logged as its own metric."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import yaml

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.trajectory import Trajectory, TurnSpan
from agentgym.trainer.rewards import RewardScorer
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG

RULE = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if "crash" in solution_str:
        raise ValueError("unreadable")
    return float(ground_truth in solution_str)
'''


def _traj(tokenizer, text: str, *, tool_rewards=(), parse_error=False, model_tokens=None) -> Trajectory:
    ids = tokenizer.encode(text, add_special_tokens=False)
    n = model_tokens if model_tokens is not None else len(ids)
    return Trajectory(uid=text, group_id="g", prompt_ids=[1], response_ids=ids, loss_mask=[1] * n + [0] * (len(ids) - n),
                      messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": text}],
                      turns=[TurnSpan("assistant", 0, len(ids))], tool_rewards=list(tool_rewards),
                      final_score=0.5,
                      tool_metrics=[{"name": "calc", "error": "x", "error_kind": "parse_error"}] if parse_error else [],
                      row_info={"data_source": "s", "reward_model": {"ground_truth": "42"}})


def test_yaml_mix_is_the_weighted_sum_with_one_metric_per_component(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    rule = tmp_path / "rule.py"
    rule.write_text(RULE)
    mix = tmp_path / "mix.yaml"
    mix.write_text(yaml.safe_dump({"components": [
        {"name": "correct", "kind": "rule", "weight": 1.0},
        {"name": "tools", "kind": "tool", "weight": 0.5},
        {"name": "outcome", "kind": "outcome", "weight": 0.1},
        {"name": "format", "kind": "format", "weight": 0.2, "kwargs": {"pattern": r"\d+$"}},
        {"name": "length", "kind": "length", "weight": 1.0, "kwargs": {"max_tokens": 10, "buffer": 4}},
        {"name": "polite", "kind": "tests.rewards.plugin_component:make", "weight": 0.25, "kwargs": {"word": "please"}},
    ]}))
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", f"custom_reward_function.path={rule}",
                             f"reward_model.mix={mix}"])
    scorer = RewardScorer.from_config(cfg)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    a = _traj(tok, "it is 42", tool_rewards=[0.2, 0.2], model_tokens=3)
    b = _traj(tok, "please crash", parse_error=True, model_tokens=8)
    c = _traj(tok, "please 42 ok", model_tokens=10)
    scores, metrics = asyncio.run(scorer.score([a, b, c]))
    # length: 0 up to 6 tokens, then -1/4 per token: a 0, b -0.5, c -1.
    expected = [1.0 + 0.5 * 0.4 + 0.05 + 0.0 + 0.0 + 0.0,
                0.0 + 0.0 + 0.05 - 0.2 - 0.5 + 0.25,
                1.0 + 0.0 + 0.05 - 0.2 - 1.0 + 0.25]
    assert scores == pytest.approx(expected)
    assert metrics["reward/component/correct/mean"] == pytest.approx(2 / 3)
    assert metrics["reward/component/tools/mean"] == pytest.approx(0.4 / 3)
    assert metrics["reward/component/format/mean"] == pytest.approx(-2 / 3)
    assert metrics["reward/component/length/mean"] == pytest.approx(-0.5)
    assert metrics["reward/component/polite/mean"] == pytest.approx(2 / 3)
    assert metrics["reward/component/correct/errors"] == 1.0 and metrics["reward/errors"] == 1.0
    assert b.extra_info["reward_error"] == "correct: ValueError: unreadable"
    assert metrics["reward/polite/calls"] == 1.0, "a plug-in component is called once per batch, its metrics kept"


def test_mix_errors_name_the_component(tmp_path, tiny_model_dir):
    def scorer_for(*components):
        return RewardScorer.from_config(load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}"]).model_copy(
            update={"reward_model": load_config(None, []).reward_model.model_copy(update={"mix": list(components)})}))

    from agentgym.config.schema import RewardComponentConfig as C

    with pytest.raises(ConfigError, match="unknown reward component kind `visual`"):
        scorer_for(C(name="v", kind="visual"))
    with pytest.raises(ConfigError, match="distinct names"):
        scorer_for(C(name="a", kind="tool"), C(name="a", kind="outcome"))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['maxtokens'\]"):
        scorer_for(C(name="len", kind="length", kwargs={"maxtokens": 3}))
    with pytest.raises(ConfigError, match="cannot load reward component factory"):
        scorer_for(C(name="p", kind="no.such.module:make"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("components: {name: x}\n")
    with pytest.raises(ConfigError, match="no `components:` list"):
        RewardScorer.from_config(load_config(None, [f"reward_model.mix={bad}"]))


def test_main_ppo_trains_on_a_mixed_reward_scored_during_the_rollout(tmp_path, tiny_model_dir):
    rows = tmp_path / "rows.jsonl"
    subprocess.run([sys.executable, "-m", "agentgym_envs.arithmetic.data", "--out", str(rows), "--rows", "4"], check=True)
    mix = tmp_path / "mix.yaml"
    mix.write_text(yaml.safe_dump({"components": [
        {"name": "outcome", "kind": "outcome", "weight": 1.0},
        {"name": "tools", "kind": "tool", "weight": 0.5},
        {"name": "length", "kind": "length", "weight": 0.5, "kwargs": {"buffer": 16}},
    ]}))
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "agentgym.trainer.main_ppo",
        "algorithm.adv_estimator=grpo", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        f"data.train_files={rows}", "data.max_response_length=32", f"actor_rollout_ref.model.path={tiny_model_dir}",
        "actor_rollout_ref.rollout.n=2", "trainer.total_training_steps=1", "trainer.use_ray=false",
        "trainer.device=cpu", f"trainer.default_local_dir={run_dir}", "trainer.logger=[jsonl]",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2", f"reward_model.mix={mix}",
        "reward_model.launch_reward_fn_async=true",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    parts = {name: record[f"reward/component/{name}/mean"] for name in ("outcome", "tools", "length")}
    assert record["critic/score/mean"] == pytest.approx(parts["outcome"] + 0.5 * parts["tools"] + 0.5 * parts["length"])
