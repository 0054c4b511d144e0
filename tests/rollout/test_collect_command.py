"""`agentgym rollout`: a real engine (the tiny model, loaded from disk), real tools and a dataset file."""

import subprocess
import sys

from agentgym.rollout.trajectory_io import read_parquet
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG


def test_rollout_command_writes_trajectories_and_summary(tiny_model_dir, tmp_path):
    rows = tmp_path / "rows.jsonl"
    subprocess.run([sys.executable, "-m", "agentgym_envs.arithmetic.data", "--out", str(rows), "--rows", "3"], check=True)
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable, "-m", "agentgym", "rollout", "--out", str(out),
            f"actor_rollout_ref.model.path={tiny_model_dir}",
            f"data.train_files={rows}",
            "data.max_response_length=48",
            "actor_rollout_ref.rollout.n=2",
            f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_CONFIG}",
            f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}",
            "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rollout summary" in result.stdout and "trajectories" in result.stdout
    trajs = read_parquet(out / "trajectories.parquet")
    assert len(trajs) == 6 and len({t.group_id for t in trajs}) == 3
    for traj in trajs:
        traj.check()
        assert traj.error is None
        assert sum(traj.loss_mask) > 0 and len(traj.response_ids) <= 48
    assert len((out / "trajectories.jsonl").read_text().splitlines()) == 6


def test_rollout_command_names_a_bad_key(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "agentgym", "rollout", "actor_rollout_ref.rollout.multiturn.max_assistant_turns=2"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "actor_rollout_ref.rollout.multiturn" in result.stderr
