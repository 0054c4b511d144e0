"""The README's main command end to end, at the smallest size: every stage runs and writes its outputs.

Whether RL improves the model is measured by the full-size run (benchmarks/learning.md), not here.
"""

import json
import subprocess
import sys

from agentgym.rollout.trajectory_io import read_jsonl


def test_quickstart_runs_every_stage(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable, "-m", "agentgym", "quickstart", "--run-dir", str(run_dir), "--sft-rows", "32",
            "--sft-epochs", "1", "--rl-steps", "1", "--eval-rows", "4", "actor_rollout_ref.rollout.n=2",
            "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        ],
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "held-out results" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["before"]) >= {"accuracy", "tool_use_correct", "mean_reward"}
    transcripts = read_jsonl(run_dir / "sft_transcripts.jsonl")
    assert len(transcripts) == 32 and all(t.final_score == 1.0 for t in transcripts)
    rl = read_jsonl(run_dir / "rl_trajectories.jsonl")
    assert len(rl) == 4 * 2 and len({t.group_id for t in rl}) == 4
    assert len(read_jsonl(run_dir / "eval_after.jsonl")) == 4
    assert (run_dir / "rl" / "metrics.jsonl").exists()
    assert (run_dir / "reward.png").stat().st_size > 1000
    assert 'class="trained"' in (run_dir / "view.html").read_text()
