"""Training an agent that already exists: the rollout launches it (a callable or a command) against the gateway,
waits with a timeout, scores the recorded trajectory, and the trainer takes GRPO steps on it."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from agentgym.config import load_config
from agentgym.episode.environment import LocalEnvironment
from agentgym.interactions.registry import load_interactions
from agentgym.models import tiny_tokenizer
from agentgym.parsers import get_parser
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.build import agent_loop_config
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.services.gateway.recorder import RecorderConfig, TrajectoryRecorder
from agentgym.services.gateway.rollout import CommandAgent, ExternalAgentRollout, make_rollout
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.trainer.driver import RLTrainer
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from tests.rollout.test_agent_loop import rows as arithmetic_rows
from tests.rollout.test_agent_loop import solver
from tests.services.conftest import ROOT

pytestmark = pytest.mark.timeout(300)
AGENT_FILE = ROOT / "agentgym_envs" / "arithmetic" / "openai_agent.py"


def scripted_rollout(agent, **kwargs) -> ExternalAgentRollout:
    tokenizer = tiny_tokenizer()
    recorder = TrajectoryRecorder(ScriptedEngine(tokenizer, solver), tokenizer, get_parser("hermes"), RecorderConfig())
    return ExternalAgentRollout(agent, recorder.engine, recorder, **kwargs)


async def test_a_command_agent_is_scored_by_the_environment(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    environment = LocalEnvironment({}, load_interactions(INTERACTION_CONFIG))
    rollout = scripted_rollout(CommandAgent(f"{sys.executable} {AGENT_FILE}"), n=2, environment=environment,
                               reward="environment")
    try:
        trajectories = await rollout.collect(arithmetic_rows(2), step=3)
    finally:
        await rollout.close()
    assert [t.uid for t in trajectories] == ["step3-0-0", "step3-0-1", "step3-1-0", "step3-1-1"]
    assert {t.group_id for t in trajectories} == {"step3-0", "step3-1"}
    assert all(t.error is None for t in trajectories), [t.error for t in trajectories]
    assert [t.final_score for t in trajectories] == [1.0] * 4, "the teacher judged the recorded answers right"
    assert all([s.role for s in t.turns] == ["assistant", "tool", "assistant"] for t in trajectories)
    assert trajectories[0].row_info["data_source"] and trajectories[0].extra_info["gateway"]["token_mismatches"] == 0
    assert not rollout.recorder.sessions, "finished sessions are dropped"


async def test_failing_and_hanging_agents_fail_their_episode_only(tmp_path):
    marker = tmp_path / "still-running"
    hang = CommandAgent(f"{sys.executable} -c \"import time, pathlib; time.sleep(30); pathlib.Path('{marker}').touch()\"")
    rollout = scripted_rollout(hang, timeout_s=1.0)
    broken = scripted_rollout(CommandAgent(f"{sys.executable} -c \"import sys; sys.exit('no model for me')\""))
    try:
        [hung] = await rollout.collect(arithmetic_rows(1), step=1)
        [failed] = await broken.collect(arithmetic_rows(1), step=1)
    finally:
        await rollout.close()
        await broken.close()
    assert hung.failed and "within 1 s" in hung.error and hung.prompt_ids and hung.response_ids == []
    assert failed.failed and "exited with 1" in failed.error and "no model for me" in failed.error
    assert rollout.agent_counts() == {"agent_failures": 0.0, "agent_timeouts": 1.0, "unscored": 0.0}
    assert not marker.exists(), "the timed-out agent's process group was killed"


async def test_grpo_steps_on_an_openai_client_agent(tiny_model_dir, tmp_path):
    rows = [{"data_source": "arith", "prompt": [{"role": "system", "content": "Use the calculator."},
                                                {"role": "user", "content": f"Compute {a} times 7 minus 3."}]}
            for a in (12, 345)]
    cfg = load_config(None, [
        f"actor_rollout_ref.model.path={tiny_model_dir}", "trainer.device=cpu", "trainer.use_ray=false",
        "actor_rollout_ref.model.attn_implementation=eager", "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.rollout.n=2", "data.max_response_length=32",
        "data.max_prompt_length=512", "actor_rollout_ref.rollout.max_num_seqs=1", "data.seed=11",
        "actor_rollout_ref.actor.optim.lr=1e-3", "trainer.total_training_steps=2", "data.shuffle=false",
        f"trainer.default_local_dir={tmp_path}", "trainer.logger=[jsonl]",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.external_agent.callable={AGENT_FILE}:brief_agent",
        "actor_rollout_ref.rollout.external_agent.max_concurrent=1",
    ])
    rollout = make_rollout(cfg)
    # Same conversation through the in-process agent loop, on the same engine, seeds and sample ids.
    loop = AgentLoop(rollout.engine, rollout.recorder.tokenizer, build_tools(load_tool_specs(TOOL_CONFIG)), {},
                     agent_loop_config(cfg, seed=cfg.data.seed))
    try:
        external = await rollout.collect(rows, step=1)
        reference = await loop.run_batch(rows, n=2, group_prefix="step1-")
        for got, want in zip(external, reference):
            assert got.error is None and want.error is None, (got.error, want.error)
            for key in ("uid", "group_id", "prompt_ids", "response_ids", "loss_mask", "turns"):
                assert getattr(got, key) == getattr(want, key), key
            assert got.rollout_logprobs == pytest.approx(want.rollout_logprobs, abs=1e-5)
            assert got.final_score > 0, "the agent's own score"
            assert sum(got.loss_mask) > 0
        trainer = RLTrainer(cfg, rollout=rollout, dataset=rows)
        try:
            history = await trainer.fit()
        finally:
            trainer.close()
    finally:
        await rollout.close()
    assert len(history) == 2
    for metrics in history:
        assert math.isfinite(metrics["actor/pg_loss"]) and metrics["rollout/external_agent/agent_failures"] == 0
        assert metrics["response/model_tokens"] > 0
    assert any(m["critic/advantages/max"] > 0 for m in history), "the agent's scores differ within a group"
    print({k: round(v, 4) for k, v in history[-1].items() if k.startswith(("actor/", "critic/score", "rollout/"))})


def test_the_guides_command_trains_the_example_agent(tiny_model_dir, tmp_path):
    """agentgym_envs/README.md's "Train an agent you already have" command, as written, with sizes overridden."""
    import re
    import subprocess

    from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows
    from agentgym.rows.parquet import write_rows_parquet

    text = (ROOT / "agentgym_envs" / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Train an agent you already have"):]
    section = section[:section.index("\n## ", 5)]
    [command] = [body for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S) if lang == "bash"]
    rows = write_rows_parquet(make_rows(ArithmeticTaskConfig(num_rows=4, seed=1)), tmp_path / "train.parquet")
    sizes = (f" data.train_files={rows} trainer.total_training_steps=1 data.train_batch_size=2"
             " actor_rollout_ref.actor.ppo_mini_batch_size=2 actor_rollout_ref.rollout.n=2 data.max_response_length=32"
             f" trainer.default_local_dir={tmp_path}/run trainer.save_freq=-1 trainer.logger=[jsonl]")
    env = {**os.environ, "MODEL": str(tiny_model_dir), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + command.rstrip() + sizes], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    [metrics] = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics["rollout/external_agent/agent_failures"] == 0 and metrics["response/model_tokens"] > 0
