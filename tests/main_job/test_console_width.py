"""Piped output keeps every character: rich's 80-column default for non-terminals cut cells to "scor…"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

STEP_TABLE = """
import sys
from agentgym.trainer.tracking import _CONSOLE_KEYS, MetricsTracker
tracker = MetricsTracker(sys.argv[1], ["console"], total_steps=1)
tracker.log(1, {key: 0.123456 for key in _CONSOLE_KEYS})
tracker.close()
"""


def _piped(args: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_training_step_table_is_not_cut_when_piped(tmp_path):
    out = _piped(["-c", STEP_TABLE, str(tmp_path)])
    assert "…" not in out
    for header in ("score/mean", "tool_use_share", "advantages/mean", "update_tokens_per_s", "timing_s", "response_length"):
        assert header in out
    assert out.count("0.1235") == 13


def test_cli_tables_are_not_cut_when_piped():
    out = _piped(["-m", "agentgym", "tools", "list", "agentgym_envs/codegen/tools.yaml"])
    assert "…" not in out
    assert "agentgym.tools.sandbox_fusion.SandboxFusionTool" in out
    assert "Run a Python program and see its output." in out
