"""The README's main command end to end, at the smallest size: every stage runs and writes its outputs.

Whether RL improves the model is measured by the full-size run (benchmarks/learning.md), not here.
"""

import json
import subprocess
import sys

import pytest

from rich.console import Console

from agentgym.quickstart import QuickstartSettings, question, tool_used_correctly
from agentgym_envs.arithmetic.quickstart import ArithmeticQuickstart as Quickstart
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
    # Piped, long stages still report as lines (not one bar at the end): the warm-up SFT and the RL steps.
    assert "warm-up SFT epochs: 0/1 (0%), 0:00 elapsed - started" in result.stdout
    assert "warm-up SFT epochs: 1/1 (100%), loss " in result.stdout
    assert "training steps: 1/1 (100%)" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("before", "after", "before_sampled", "after_sampled"):
        assert set(summary[key]) >= {"accuracy", "tool_use_correct", "mean_reward"}
    transcripts = read_jsonl(run_dir / "sft_transcripts.jsonl")
    assert len(transcripts) == 32 and all(t.final_score == 1.0 for t in transcripts)
    # half the demonstrations answer from memory; the others run the task's expression in the sandbox
    assert sorted(t.num_tool_calls for t in transcripts) == [0] * 16 + [1] * 16
    called = [t for t in transcripts if t.num_tool_calls]
    assert all(t.messages[2]["tool_calls"][0]["function"]["name"] == "code_interpreter" for t in called)
    assert all(tool_used_correctly(t) for t in called) and not any(tool_used_correctly(t) for t in transcripts if t not in called)
    rl = read_jsonl(run_dir / "rl_trajectories.jsonl")
    assert len(rl) == 4 * 2 and len({t.group_id for t in rl}) == 4
    assert len(read_jsonl(run_dir / "eval_after.jsonl")) == len(read_jsonl(run_dir / "eval_before_sampled.jsonl")) == 4
    assert (run_dir / "rl" / "metrics.jsonl").exists()
    assert (run_dir / "reward.png").stat().st_size > 1000
    assert 'class="trained"' in (run_dir / "view.html").read_text()


def test_held_out_tasks_are_never_trained_on(tmp_path):
    # one-digit numbers make repeats between the splits likely, so the filter has something to remove
    settings = QuickstartSettings(run_dir=tmp_path, sft_rows=2048, eval_rows=256, min_digits=1, max_digits=1)
    job = Quickstart(settings, Console(file=None))
    held_out = {question(row) for row in job.eval_rows}
    assert len(job.eval_rows) == 256
    assert not held_out & {question(row) for row in job.sft_rows + job.train_rows}
    assert len(job.sft_rows) < 2048, "no repeat was removed: the test no longer exercises the filter"


def test_bad_settings_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="from 0 to 1; got 1.5"):
        Quickstart(QuickstartSettings(run_dir=tmp_path, direct_share=1.5), Console(file=None))
    with pytest.raises(ValueError, match="choose one of"):
        Quickstart(QuickstartSettings(run_dir=tmp_path, environment="chess"), Console(file=None))


def test_dotted_overrides_reach_rl_but_not_the_warm_ups_own_settings(tmp_path):
    """An `optim.lr` given for RL once became the warm-up's learning rate too (5x too small on the GPU run of
    SmolLM2, which left the warmed-up model at 0 %): the warm-up's flags win for its stage."""
    settings = QuickstartSettings(run_dir=tmp_path, sft_lr=5e-5, sft_batch_size=8, rl_steps=3,
                                  overrides=("actor_rollout_ref.actor.optim.lr=1e-5", "data.train_batch_size=64",
                                             "trainer.total_training_steps=99"))
    job = Quickstart(settings, Console(file=None))
    sft, rl = job.sft_config(tmp_path / "model"), job.rl_config(tmp_path / "model")
    assert sft.actor_rollout_ref.actor.optim.lr == 5e-5 and sft.data.train_batch_size == 8
    assert rl.actor_rollout_ref.actor.optim.lr == 1e-5 and rl.data.train_batch_size == 64
    assert rl.trainer.total_training_steps == 3
    assert sft.trainer.default_local_dir.endswith("sft") and rl.trainer.default_local_dir.endswith("rl")
