"""verl's command shape runs with agentgym's own rollout side: `main_ppo` + a YAML + overrides, no Python glue.
With verl's `trainer.rollout_data_dir` it records each step's trajectories, and `agentgym view` pages through them."""

import json
import subprocess
import sys

from agentgym.rollout.trajectory_io import read_jsonl, read_parquet
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG


def test_main_ppo_trains_with_the_default_agent_loop(tmp_path, tiny_model_dir):
    model = tiny_model_dir
    rows = tmp_path / "rows.parquet"
    subprocess.run([sys.executable, "-m", "agentgym_envs.arithmetic.data", "--out", str(rows), "--rows", "4"], check=True)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "agentgym.trainer.main_ppo",
        "algorithm.adv_estimator=grpo", "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        f"data.train_files={rows}", "data.max_response_length=32", f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.rollout.n=2", "trainer.total_training_steps=2", "trainer.use_ray=false", "trainer.device=cpu",
        f"trainer.default_local_dir={run_dir}", "trainer.logger=[jsonl]",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
        f"trainer.rollout_data_dir={run_dir / 'rollout'}", "trainer.rollout_data_parquet=true",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in records] == [1, 2] and "actor/grad_norm" in json.dumps(records[0])

    for step in (1, 2):
        trajectories = read_jsonl(run_dir / "rollout" / f"{step}.jsonl")
        assert len(trajectories) == 4 and all(t.group_id.startswith(f"step{step}-") for t in trajectories)
        assert [t.uid for t in read_parquet(run_dir / "rollout" / f"{step}.parquet")] == [t.uid for t in trajectories]
        assert abs(sum(t.reward for t in trajectories) / 4 - records[step - 1]["critic/score/mean"]) < 1e-6

    viewed = subprocess.run([sys.executable, "-m", "agentgym", "view", str(run_dir)], capture_output=True, text=True,
                            timeout=120)
    assert viewed.returncode == 0, viewed.stderr
    index = (run_dir / "view.html").read_text()
    assert '<a href="view_steps/step_1.html">step 1</a>' in index and '<a href="view_steps/step_2.html">step 2</a>' in index
    step_2 = (run_dir / "view_steps" / "step_2.html").read_text()
    assert step_2.count('<div class="traj"') == 4 and '<a href="step_1.html">' in step_2 and "step 3" not in step_2
