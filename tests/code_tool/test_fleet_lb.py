"""The compose fleet's load balancer config (scripts/docker/lb/haproxy.cfg) with Debian's HAProxy on loopback in front
of three real sandbox servers: requests spread, one server SIGKILLed under load loses no call, the restarted one
is checked back in. Only the server lines differ from the shipped file (Docker's DNS finds replicas there)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from agentgym.tools.sandbox_fusion import SandboxFusionTool
from agentgym.tools.sandbox_fusion.http import PROCESS_SESSIONS

from .sandbox_process import SandboxProcess

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "scripts" / "docker" / "lb" / "haproxy.cfg"
COMPOSE_ENV = {"LB_BIND": ":8080", "SANDBOX_SERVICE": "sandbox", "SANDBOX_PORT": "8080", "SANDBOX_SLOTS": "64"}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs Debian's haproxy (apt-get install haproxy)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shipped_config_is_valid_with_the_compose_environment():
    check = subprocess.run(["haproxy", "-c", "-f", str(CONFIG)], env={**os.environ, **COMPOSE_ENV},
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def loopback_config(servers: list[SandboxProcess]) -> str:
    """The shipped file with its `server-template` (DNS discovery) replaced by one `server` line per local server."""
    lines = CONFIG.read_text().splitlines()
    template = [i for i, line in enumerate(lines) if line.strip().startswith("server-template ")]
    assert len(template) == 1, "haproxy.cfg should discover replicas with exactly one server-template line"
    servers_lines = [f"    server s{k} 127.0.0.1:{s.port} check" for k, s in enumerate(servers)]
    return "\n".join(lines[: template[0]] + servers_lines + lines[template[0] + 1:]) + "\n"


@pytest.fixture
def fleet_behind_lb(tmp_path):
    servers = [SandboxProcess(env={"MY_POD_NAME": f"replica-{k}"}).start() for k in range(3)]
    config = tmp_path / "haproxy.cfg"
    config.write_text(loopback_config(servers))
    port = _free_port()
    lb = subprocess.Popen(["haproxy", "-db", "-f", str(config)], env={**os.environ, "LB_BIND": f"127.0.0.1:{port}"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if lb.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: {lb.stderr.read() if lb.stderr else ''}")
            time.sleep(0.1)
    try:
        yield url, servers
    finally:
        lb.terminate()
        lb.wait(10)
        for server in servers:
            server.stop()


async def _replica(url: str, code: str = "print(1)") -> str:
    body = {"code": code, "language": "python", "run_timeout": 10, "compile_timeout": 10, "memory_limit_MB": 256}
    async with PROCESS_SESSIONS.get().post(url + "/run_code", json=body, timeout=aiohttp.ClientTimeout(total=30)) as r:
        assert r.status == 200, await r.text()
        answer = json.loads(await r.read())
    assert answer["status"] == "Success", answer
    return answer["executor_pod_name"]


async def test_requests_spread_a_killed_replica_loses_nothing_and_comes_back(fleet_behind_lb):
    url, servers = fleet_behind_lb
    async with PROCESS_SESSIONS.get().get(url + "/lb/health") as r:
        assert r.status == 200
    # Spread: 30 calls at once reach all three replicas.
    seen = await asyncio.gather(*(_replica(url, "import time; time.sleep(0.2); print(1)") for _ in range(30)))
    assert set(seen) == {"replica-0", "replica-1", "replica-2"}, seen

    # One replica SIGKILLed with calls in flight: every call through the balancer still gets its program's answer.
    tool = SandboxFusionTool({"sandbox_fusion_url": url, "fleet_size": 3, "enable_global_rate_limit": False,
                              "retry_initial_backoff": 0.05, "retry_max_backoff": 0.5}, None)
    assert tool.settings.effective_num_workers == 30
    iid, _ = await tool.create()

    async def kill_soon() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(servers[0].kill)

    calls = [tool.execute(iid, {"code": f"import time; time.sleep(0.5); print({i})"}) for i in range(30)]
    results, _ = await asyncio.gather(asyncio.gather(*calls), kill_soon())
    assert [r[0].text for r in results] == [f"Exit code: 0\n--- stdout ---\n{i}" for i in range(30)]
    assert all(r[2]["outcome"] == "success" for r in results)

    # Restarted on its port: the balancer's /v1/ping check puts it back (checks every 2 s, back after one good one).
    await asyncio.to_thread(servers[0].start)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = await asyncio.gather(*(_replica(url, "import time; time.sleep(0.1)") for _ in range(9)))
        if "replica-0" in seen:
            break
        await asyncio.sleep(0.5)
    assert "replica-0" in seen, "the restarted replica was not checked back into rotation within 30 s"
