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
    for header in ("score", "tool_use_share", "advantages", "update_tokens_per_s", "timing_s", "response_length", "memory"):
        assert header in out
    from agentgym.trainer.tracking import _CONSOLE_KEYS
    assert out.count("0.1235") == len(_CONSOLE_KEYS)


def test_cli_tables_are_not_cut_when_piped():
    out = _piped(["-m", "agentgym", "tools", "list", "agentgym_envs/codegen/tools.yaml"])
    assert "…" not in out
    assert "agentgym.tools.sandbox_fusion.SandboxFusionTool" in out
    assert "Run a Python program and see its output." in out


STAGE = """
import sys, time
from agentgym.utils.console import StageProgress, make_console
console = make_console()
with StageProgress(console, "warm-up SFT epochs", 20, every_s=float(sys.argv[1]), loss="") as progress:
    for epoch in range(20):
        progress.update(epoch + 1, loss=f"loss {1.0 / (epoch + 1):.3f}")
    time.sleep(float(sys.argv[2]))  # a long quiet stretch: the heartbeat speaks
"""


def test_long_stage_reports_progress_as_lines_in_a_log():
    """Redirected to a file, a stage writes a line per 10 % and a heartbeat while quiet (rich's bar would print
    only once, at the end: the quickstart's warm-up SFT was silent for 9 minutes)."""
    out = _piped(["-c", STAGE, "1", "2.5"]).splitlines()
    assert out[0] == "warm-up SFT epochs: 0/20 (0%), 0:00 elapsed - started"
    counted = [line for line in out if line.startswith("warm-up SFT epochs: ") and "- " not in line]
    assert [line.split(":")[1].split()[0] for line in counted] == [f"{k}/20" for k in range(2, 21, 2)]
    assert "loss 0.500" in counted[0] and "(10%)" in counted[0]
    beats = [line for line in out if line.endswith("- still running")]
    assert 1 <= len(beats) <= 3 and all("20/20 (100%)" in line for line in beats)
    assert out[-1].endswith("- done") and "\x1b" not in "\n".join(out)
