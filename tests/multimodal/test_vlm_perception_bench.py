"""benchmarks/vlm_perception.py runs a probe end to end and reports its learning curve (the figures themselves are
in benchmarks/learning.md; a few steps here only check the script works and refuses an unknown probe)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_probe_runs_and_reports_held_out_accuracy(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/vlm_perception.py", "--probes", "quarter_colour", "--steps", "2",
                           "--every", "1", "--models", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [report] = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert report["probe"] == "quarter_colour" and [c["step"] for c in report["curve"]] == [1, 2]
    assert all(0.0 <= c["held_out_accuracy"] <= 1.0 and c["loss"] > 0 for c in report["curve"])


def test_an_unknown_probe_is_refused_with_the_choices(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/vlm_perception.py", "--probes", "nope", "--models", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "unknown probe 'nope'" in done.stderr and "quarter_colour" in done.stderr
