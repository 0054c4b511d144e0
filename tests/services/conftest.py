"""Real servers on loopback, started as subprocesses the way users start them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    return env


@dataclass
class Served:
    process: subprocess.Popen
    url: str


def start_environment_server(*args: str) -> Served:
    return start_module_server("agentgym.services.environment", *args)


def stop(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        served.process.kill()


def marker_tools_yaml(tmp_path: Path, *, execute_timeout: float | None = None) -> Path:
    markers = tmp_path / "markers"
    timeout = f"\n      execute_timeout: {execute_timeout}" if execute_timeout else ""
    path = tmp_path / "marker_tools.yaml"
    path.write_text(f"""tools:
  - class_name: tests.services.marker_tool.MarkerTool
    config:
      dir: {markers}{timeout}
    tool_schema:
      type: function
      function:
        name: marker
        description: Echo a text back.
        parameters:
          type: object
          properties:
            text: {{type: string}}
            sleep_s: {{type: number}}
          required: [text]
""")
    return path


@pytest.fixture
def marker_server(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    served = start_environment_server("--tools", str(marker_tools_yaml(tmp_path, execute_timeout=1.0)),
                                      "--idle-timeout", "1.0", "--max-sessions", "3")
    try:
        yield served, tmp_path / "markers"
    finally:
        stop(served)


def start_module_server(module: str, *args: str) -> Served:
    """`python3 -m MODULE --port 0 ARGS`, waiting for its `ready at URL` line."""
    process = subprocess.Popen([sys.executable, "-m", module, "--port", "0", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=child_env(), cwd=ROOT)
    deadline = time.monotonic() + 120
    lines = []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"ready at (http://\S+)", line)
        if found:
            return Served(process, found.group(1))
    process.kill()
    raise RuntimeError(f"{module} did not start:\n" + "".join(lines))
