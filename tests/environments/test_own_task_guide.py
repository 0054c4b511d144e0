"""agentgym_envs/README.md's "Write your own task" runs as written: its files are saved where their first-line
comments say, its bash blocks run in order in an empty directory, with a tiny model built offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Write your own task"


def guide_blocks() -> list[tuple[str, str]]:
    text = (REPO / "agentgym_envs" / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    following = section.find("\n## ", len(SECTION))
    section = section if following < 0 else section[:following]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_guide_has_every_step():
    blocks = guide_blocks()
    files = [body.splitlines()[0].removeprefix("# ") for lang, body in blocks if lang in ("python", "yaml")]
    assert files == ["my_task/lookup.py", "my_task/tools.yaml", "my_task/teacher.py", "my_task/interaction.yaml",
                     "my_task/data.py", "my_task/run.yaml"]
    commands = "\n".join(body for lang, body in blocks if lang == "bash")
    for step in ("my_task.data", "tools validate", "interactions validate", "agentgym rollout", "agentgym view",
                 "agentgym.trainer.main_ppo"):
        assert step in commands


def test_guide_runs_as_written(tmp_path):
    script = ["set -euo pipefail"]
    for lang, body in guide_blocks():
        if lang in ("python", "yaml"):
            path = tmp_path / body.splitlines()[0].removeprefix("# ")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")
        elif lang == "bash":
            script.append(body)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:"
           + os.environ.get("PATH", "")}
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout
    assert "OK my_task/tools.yaml: 1 tool(s): lookup" in out
    assert "OK my_task/interaction.yaml: 1 interaction(s): age_teacher (my_task.teacher.AgeTeacher)" in out
    assert "rollout summary" in out and "tool errors" in out

    lines = (tmp_path / "runs/my_task_rollout/trajectories.jsonl").read_text().splitlines()
    rollout = [json.loads(line) for line in lines]
    assert len(rollout) == 8 * 2 and not any(t["error"] for t in rollout)
    assert (tmp_path / "runs/my_task_rollout/view.html").exists()
    assert [json.loads(line)["step"] for line in (tmp_path / "runs/my_task/metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (tmp_path / "runs/my_task/rollout/2.jsonl").exists()
    index = (tmp_path / "runs/my_task/view.html").read_text()
    assert "view_steps/step_1.html" in index and "view_steps/step_2.html" in index
