"""`agentgym quickstart --task zoom_count` end to end at the smallest size: a tiny VLM is built, warmed up on
zoom-tool demonstrations, trained one GRPO step, and evaluated before and after; every stage writes its outputs.

Whether RL improves the model is measured by the full-size runs (benchmarks/learning.md), not here.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from agentgym.rollout.trajectory_io import read_jsonl
from agentgym_envs.zoom_count.learn import ZoomCountQuickstart

ROOT = Path(__file__).resolve().parents[2]


def _quickstart(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentgym", "quickstart", "--task", "zoom_count", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)


def test_zoom_count_quickstart_runs_every_stage(tmp_path):
    run_dir = tmp_path / "run"
    done = _quickstart("--run-dir", str(run_dir), "--sft-rows", "8", "--sft-epochs", "1", "--rl-steps", "1",
                       "--eval-rows", "4", "actor_rollout_ref.rollout.n=2", "data.train_batch_size=2",
                       "actor_rollout_ref.actor.ppo_mini_batch_size=2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "held-out results" in done.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("before", "after", "before_sampled", "after_sampled"):
        assert set(summary[key]) >= {"accuracy", "tool_use_correct", "mean_reward"}
        assert 0.0 <= summary[key]["accuracy"] <= 1.0
    assert list(summary["phase_seconds"]) == ["model", "demonstrations", "sft", "eval_before", "rl", "eval_after"]
    assert summary["settings"]["model_size"] == "tiny-vl"
    # The teacher's transcripts: the prompt image, a zoom whose crop holds every shape and reached the model as an
    # image, then the true count.
    transcripts = read_jsonl(run_dir / "sft_transcripts.jsonl")
    assert len(transcripts) == 8
    job = ZoomCountQuickstart(ZoomCountQuickstart.settings(run_dir), Console(file=None))
    graded = job.evaluate(transcripts)
    assert graded.accuracy == 1.0 and graded.tool_use_correct == 1.0
    assert all([s.turn is None for s in t.image_spans[:1]] and len(t.image_spans) == 2 for t in transcripts)
    rl = read_jsonl(run_dir / "rl_trajectories.jsonl")
    assert len(rl) == 2 * 2 and all(t.images for t in rl)
    for name in ("before", "after", "before_sampled", "after_sampled"):
        assert len(read_jsonl(run_dir / f"eval_{name}.jsonl")) == 4
    assert (run_dir / "models" / "sft" / "preprocessor_config.json").exists()
    assert (run_dir / "rl" / "metrics.jsonl").exists()

    # The grading itself: a wrong count, and a zoom that misses part of the shapes, are not counted.
    wrong = copy.deepcopy(transcripts[0])
    wrong.messages[-1]["content"] = "\\boxed{%d}" % (int(wrong.row_info["reward_model"]["ground_truth"]) % 4 + 1)
    x1, y1, x2, y2 = wrong.extra_info["region"]
    tool = next(m for m in wrong.messages if m["role"] == "tool")
    text = next(p for p in tool["content"] if isinstance(p, dict) and p.get("type") == "text")
    text["text"] = f"Zoomed in on [{x1 + 8}, {y1}, {x2}, {y2}]."
    assert job.evaluate([wrong]).accuracy == 0.0 and job.evaluate([wrong]).tool_use_correct == 0.0
    junk = copy.deepcopy(transcripts[0])  # what GRPO found: the rule's last-number fallback pays it a quarter of the time
    junk.messages[-1]["content"] = "\\box_, %s}" % junk.row_info["reward_model"]["ground_truth"]
    assert job.evaluate([junk]).accuracy == 0.0


def test_arithmetic_only_options_are_refused_with_the_fix(tmp_path):
    done = _quickstart("--run-dir", str(tmp_path), "--environment", "arithmetic")
    assert done.returncode == 2 and "--task zoom_count has its own" in done.stderr
    try:
        ZoomCountQuickstart(ZoomCountQuickstart.settings(tmp_path, direct_share=0.5), Console(file=None))
    except ValueError as exc:
        assert "always zooms" in str(exc)
    else:
        raise AssertionError("a direct share was accepted")
