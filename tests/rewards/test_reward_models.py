"""Reward models: a sequence-classification RM (built locally, loaded with from_pretrained) in its own Ray worker
group, and a generative judge on our engines (in-process and SGLang's HTTP API); both batch and report
throughput."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from agentgym.config import load_config
from agentgym.errors import ConfigError
from agentgym.rewards.judge import DEFAULT_SCORE_PATTERN, GenerativeJudge, parse_score
from agentgym.rewards.reward_model import SequenceRewardModel, conversation_text
from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.trajectory import Trajectory
from agentgym.trainer.rewards import RewardScorer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny one-label sequence classifier on the tiny model's config and tokenizer, saved like any HF RM."""
    out = tmp_path_factory.mktemp("rm")
    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1)
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def _conversations() -> list[Trajectory]:
    texts = ["12", "the answer is 84, since 12 * 7 = 84", "I do not know", "84"]
    return [Trajectory(uid=f"t{i}", group_id="g", prompt_ids=[1], response_ids=[2],
                       messages=[{"role": "user", "content": "What is 12 * 7?"}, {"role": "assistant", "content": t}],
                       row_info={"reward_model": {"ground_truth": "84"}})
            for i, t in enumerate(texts)]


def _reference_scores(rm_dir: Path, trajs: list[Trajectory]) -> list[float]:
    """Each conversation alone, unpadded: what batching and padding must not change."""
    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for t in trajs:
            ids = tokenizer(conversation_text(tokenizer, t.messages), add_special_tokens=False, return_tensors="pt")
            out.append(float(model(**ids).logits[0, 0]))
    return out


def test_reward_model_in_its_own_ray_group_matches_unbatched_scores(rm_dir, ray_local, tiny_model_dir):
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", "reward_model.enable=true",
                             f"reward_model.model.path={rm_dir}", "reward_model.micro_batch_size_per_gpu=3",
                             "trainer.device=cpu"])
    scorer = RewardScorer.from_config(cfg)  # RM enabled and no reward function: its score is the reward (verl)
    trajs = _conversations()
    scores, metrics = asyncio.run(scorer.score(trajs))
    expected = _reference_scores(rm_dir, trajs)
    assert scores == pytest.approx(expected, abs=1e-4)
    assert len(set(round(s, 4) for s in scores)) == 4, "the model tells the conversations apart"
    rm = scorer.terms[0].component.scorer
    assert isinstance(rm, SequenceRewardModel) and rm.use_ray and len(rm._workers) == 1
    import ray

    assert isinstance(rm._workers[0], ray.actor.ActorHandle), "the RM runs in its own Ray actor"
    assert metrics["reward_model/samples"] == 4.0 and metrics["reward_model/samples_per_s"] > 0
    assert metrics["reward_model/tokens_per_s"] > 0
    rm.shutdown()


def test_reward_model_config_errors(rm_dir, tiny_model_dir, tmp_path):
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", "reward_model.enable=true"])
    with pytest.raises(ConfigError, match="reward_model.model.path"):
        RewardScorer.from_config(cfg)
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", "reward_model.enable=true",
                             f"reward_model.model.path={rm_dir}", "reward_model.enable_resource_pool=true"])
    with pytest.raises(ConfigError, match="no GPUs"):
        RewardScorer.from_config(cfg)
    two = tmp_path / "two_labels"
    AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(tiny_model_dir, num_labels=2)).save_pretrained(two)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(two)
    cfg = load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", "reward_model.enable=true",
                             f"reward_model.model.path={two}", "trainer.use_ray=false"])
    scorer = RewardScorer.from_config(cfg)
    with pytest.raises(ConfigError, match="2 labels"):
        asyncio.run(scorer.score(_conversations()))


def test_score_parser():
    pattern = re.compile(DEFAULT_SCORE_PATTERN, re.IGNORECASE)
    assert parse_score("reasoning... Score: 7", pattern) == 7.0
    assert parse_score("score = 3.5\nthen **Score:** 8", pattern) == 8.0
    assert parse_score("no grade here", pattern) is None


def _judge_config(tiny_model_dir, *extra):
    return load_config(None, [f"actor_rollout_ref.model.path={tiny_model_dir}", "reward_model.judge.enable=true",
                              f"reward_model.judge.model_path={tiny_model_dir}", "trainer.device=cpu", *extra])


def test_judge_renders_the_template_and_parses_the_score(tiny_model_dir):
    judge = GenerativeJudge.from_config(_judge_config(tiny_model_dir))
    seen = []

    def grader(conversation: str, session_id: str | None) -> str:
        seen.append(conversation)
        return "Looks right. Score: 9" if "84" in conversation.split("Assistant's answer:")[1] else "Wrong. Score: 2"

    judge.engine = ScriptedEngine(judge.tokenizer, grader)
    judge._started, judge._slots = True, asyncio.Semaphore(4)
    trajs = _conversations()
    results = asyncio.run(judge.score(trajs))
    assert [r.score for r in results] == [0.2, 0.9, 0.2, 0.9]
    assert "Reference answer: 84" in seen[0] and "What is 12 * 7?" in seen[0]
    metrics = judge.step_metrics()
    assert metrics["judge/requests"] == 4.0 and metrics["judge/unparsed_fraction"] == 0.0


def test_judge_on_the_in_process_engine_batches_and_reports(tiny_model_dir):
    cfg = _judge_config(tiny_model_dir, "reward_model.judge.max_new_tokens=8")
    scorer = RewardScorer.from_config(cfg)  # judge enabled, no reward function: the judge's score is the reward
    judge = scorer.terms[0].component.scorer
    assert isinstance(judge.engine, DynamicCacheEngine)
    trajs = _conversations()
    scores, metrics = asyncio.run(scorer.score(trajs))
    stats = judge.engine.stats
    assert stats.requests_finished == 4 and stats.prefill_passes < 4, "the four judgements were batched"
    # A random tiny model writes no "Score: N": each trajectory scores 0 with the judge's words in its record.
    unparsed = metrics["judge/unparsed_fraction"]
    assert metrics["reward/errors"] == unparsed * 4
    assert all(("holds no score" in t.extra_info.get("reward_error", "")) == (s == 0.0) for t, s in zip(trajs, scores))
    assert metrics["judge/requests_per_s"] > 0 and metrics["judge/generated_tokens_per_s"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_judge_on_an_sglang_server(tiny_model_dir):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.engines.sglang_test_server", "--model-path",
                               str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.5)
        cfg = _judge_config(tiny_model_dir, "reward_model.judge.engine=sglang",
                            f"reward_model.judge.url=http://127.0.0.1:{port}", "reward_model.judge.max_new_tokens=6")
        judge = GenerativeJudge.from_config(cfg)

        async def run():
            try:
                return await judge.score(_conversations()), judge.engine.stats
            finally:
                await judge.close()

        results, stats = asyncio.run(run())
        assert len(results) == 4 and stats.requests == 4
        assert judge.step_metrics()["judge/requests"] == 4.0
    finally:
        server.terminate()
        server.wait(timeout=30)
