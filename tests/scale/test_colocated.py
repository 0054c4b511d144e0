"""The colocated hybrid engine on a two-node Ray cluster: 4 trainer ranks over both nodes, an engine replica in every
rank, 3 GRPO steps of a tool-using task. Every replica generates, ranks are numbered node by node, and after every
step every replica's weights equal the trainer's full parameters bit for bit (synced inside each rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_colocated_replicas_on_two_nodes(tiny_model_dir, tmp_path):
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(HERE / "colocated_run.py"), str(tiny_model_dir), str(out),
                          "--ranks", "4", "--steps", "3"], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 3
    nodes = result["nodes"]
    assert len(set(nodes)) == 2 and nodes[0] == nodes[1] and nodes[2] == nodes[3], "ranks 0-1 on one node, 2-3 on the other"
    for check in result["checks"]:
        assert check["exact"] == [True] * 4, f"step {check['step']}: a replica differs from the trainer"
        assert set(check["requests"]) == {f"rollout/replica_{i}/requests" for i in range(4)}
        assert all(n > 0 for n in check["requests"].values()), "every rank's replica served this step"
    digests = [c["digest"] for c in result["checks"]]
    assert len(set(digests)) == 3, "the weights moved every step (so the equality is of new weights)"
    assert all(c["generated_tokens"] > 0 for c in result["counters"])


@pytest.mark.slow
def test_colocated_replicas_one_step_off(tiny_model_dir, tmp_path):
    """The next rollout runs on the ranks' replicas through the update (their KV caches kept): every sync still
    leaves each replica equal to the trainer, and later steps train on tokens one version old."""
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(HERE / "colocated_run.py"), str(tiny_model_dir), str(out),
                          "--ranks", "2", "--steps", "3", "--rollout-mode", "one_step_off"], capture_output=True,
                         text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 3
    assert all(check["exact"] == [True, True] for check in result["checks"])
    assert result["staleness_max"] == [0, 1, 1], "step 1 trains on version 0, later steps one version behind"
