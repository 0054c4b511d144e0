"""verl's command shape runs with agentgym's own rollout side: `main_ppo` + a YAML + overrides, no Python glue."""

import json
import subprocess
import sys

from environments.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG


def test_main_ppo_trains_with_the_default_agent_loop(tmp_path, tiny_model_dir):
    model = tiny_model_dir
    rows = tmp_path / "rows.parquet"
    subprocess.run([sys.executable, "-m", "environments.arithmetic.data", "--out", str(rows), "--rows", "4"], check=True)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "agentgym.trainer.main_ppo",
        "algorithm.adv_estimator=grpo", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        f"data.train_files={rows}", "data.max_response_length=32", f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.rollout.n=2", "trainer.total_training_steps=1", "trainer.use_ray=false", "trainer.device=cpu",
        f"trainer.default_local_dir={run_dir}", "trainer.logger=[jsonl]",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [metrics] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics["step"] == 1 and "actor/grad_norm" in json.dumps(metrics)
