"""`agentgym quickstart --task zoom_color` end to end at the smallest size: warm-up demonstrations that zoom and
demonstrations that answer at once, one GRPO step, evaluations before and after.

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
from agentgym_envs.zoom_color.learn import ZoomColorQuickstart
from agentgym_envs.zoom_count.learn import called_a_tool

ROOT = Path(__file__).resolve().parents[2]


def test_zoom_color_quickstart_runs_every_stage_with_direct_answers(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "agentgym", "quickstart", "--task", "zoom_color", "--run-dir",
                           str(run_dir), "--sft-rows", "8", "--sft-epochs", "1", "--rl-steps", "1", "--eval-rows", "4",
                           "actor_rollout_ref.rollout.n=2", "data.train_batch_size=2",
                           "actor_rollout_ref.actor.ppo_mini_batch_size=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert float(summary["settings"]["direct_share"]) == 0.5 and summary["settings"]["environment"] == "zoom_color"
    for key in ("before", "after", "before_sampled", "after_sampled"):
        assert 0.0 <= summary[key]["accuracy"] <= 1.0

    transcripts = read_jsonl(run_dir / "sft_transcripts.jsonl")
    zoomed = [t for t in transcripts if called_a_tool(t)]
    direct = [t for t in transcripts if t not in zoomed]
    assert len(zoomed) == len(direct) == 4  # half the teacher's episodes answer from the whole picture
    assert all(len(t.image_spans) == 2 for t in zoomed) and all(len(t.image_spans) == 1 for t in direct)
    job = ZoomColorQuickstart(ZoomColorQuickstart.settings(run_dir), Console(file=None))
    graded = job.evaluate(transcripts)
    assert graded.accuracy == 1.0 and graded.tool_use_correct == 0.5
    assert job.failed_demonstrations(transcripts) == []

    wrong = copy.deepcopy(zoomed[0])  # a wrong colour, after a zoom on another quarter
    truth = wrong.row_info["reward_model"]["ground_truth"]
    wrong.messages[-1]["content"] = "\\boxed{%s}" % ("red" if truth != "red" else "blue")
    tool = next(m for m in wrong.messages if m["role"] == "tool")
    text = next(p for p in tool["content"] if isinstance(p, dict) and p.get("type") == "text")
    x1, y1, x2, y2 = wrong.extra_info["region"]
    text["text"] = f"Zoomed in on [{(x1 + 112) % 224}, {y1}, {(x2 + 112) % 224 or 224}, {y2}]."
    assert job.evaluate([wrong]).accuracy == 0.0 and job.evaluate([wrong]).tool_use_correct == 0.0
    assert job.failed_demonstrations([wrong]) == [wrong]
