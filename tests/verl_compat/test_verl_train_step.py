"""A verl tool and interaction, ported by import lines, run through the AgentLoop inside main_ppo's run and train one
step: the rows are verl's layout, the tool's calc_reward returns a list, the tool's execute is traced."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from agentgym.config import load_config
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.build import agent_loop_config, load_environment
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.trainer.main_ppo import run_ppo

from .verl_layout import ANSWER_TOOL_YAML, INTERACTION_YAML, install_ported, scripted_student, tool_call, verl_rows, write_parquet

STEPS = [tool_call("scratchpad", {"note": "add the parts"}), tool_call("calc_gsm8k_reward", {"answer": "{answer}"}),
         "#### {wrong}", "#### {answer}"]


def test_ported_verl_tool_trains_one_step(tmp_path, monkeypatch, tiny_model_dir):
    install_ported(tmp_path, monkeypatch)
    (tmp_path / "tools.yaml").write_text(ANSWER_TOOL_YAML)
    (tmp_path / "interaction.yaml").write_text(INTERACTION_YAML)
    rows = write_parquet(verl_rows(), tmp_path / "train.parquet")
    run_dir = tmp_path / "run"
    config = load_config(None, [
        f"actor_rollout_ref.model.path={tiny_model_dir}", "trainer.device=cpu", "trainer.use_ray=false",
        "algorithm.adv_estimator=grpo", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.rollout.n=2", f"data.train_files={rows}", "data.max_response_length=256",
        "data.max_prompt_length=1024", "trainer.total_training_steps=1", f"trainer.default_local_dir={run_dir}",
        "trainer.logger=[jsonl]", "trainer.save_freq=-1",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tmp_path / 'tools.yaml'}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={tmp_path / 'interaction.yaml'}",
    ])
    collected = []

    def make_rollout(cfg):
        """The default rollout's agent loop, tools and interaction, with an engine that follows a script."""
        tokenizer = AutoTokenizer.from_pretrained(cfg.actor_rollout_ref.model.path)
        tools, interactions = load_environment(cfg)
        loop = AgentLoop(ScriptedEngine(tokenizer, scripted_student(STEPS)), tokenizer, tools, interactions,
                         agent_loop_config(cfg))

        async def collect(batch, step):
            trajectories = await loop.run_batch(batch, n=cfg.actor_rollout_ref.rollout.n, group_prefix=f"step{step}-")
            collected.extend(trajectories)
            return trajectories

        return collect, None

    [metrics] = run_ppo(config, make_rollout=make_rollout)
    assert "actor/grad_norm" in metrics and metrics["response/failed_fraction"] == 0.0
    [logged] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged["step"] == 1
    assert len(collected) == 4 and not [t.error for t in collected if t.failed]
    for traj in collected:
        assert traj.finish_reason == "interaction_done" and traj.interaction_rewards == [0.0, 1.0]
        assert [m["name"] for m in traj.tool_metrics] == ["scratchpad", "calc_gsm8k_reward"]
        assert [m["trace"][0]["op"] for m in traj.tool_metrics] == ["ScratchpadTool.execute", "AnswerCheckTool.execute"]
        assert traj.extra_info["reward_metrics"]["scratchpad.calc_reward"]["type"] == "list"
        assert traj.final_score == 2.0 and sum(traj.loss_mask) > 0
