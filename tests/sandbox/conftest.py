"""A real sandbox server, started as a subprocess on a free loopback port, shared by the session."""

from __future__ import annotations

import os
import re
import shutil
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import httpx
import pytest

READY = re.compile(r"ready at (http://\S+)")


SECRET_ENV = "AGENTGYM_SANDBOX_TEST_SECRET"
SECRET_VALUE = "s3cr3t-value-that-user-code-must-never-see"


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    sandbox_uid: int = 0
    work_root: Optional[Path] = None

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_server(*extra: str, env: Optional[dict] = None, timeout: float = 60) -> ServerProcess:
    cmd = [sys.executable, "-m", "sandbox_server", "--host", "127.0.0.1", "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env if env is not None else dict(os.environ))
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.5):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = READY.search(line)
        if m:
            return ServerProcess(m.group(1), proc)
    proc.kill()
    proc.wait()
    raise RuntimeError("sandbox server did not start:\n" + "".join(lines))


def stop_server(server: ServerProcess) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[ServerProcess]:
    # A uid and work root of its own, so the leftover checks are not confused by other servers on the host.
    uid = 62000 + os.getpid() % 3000
    work_root = Path("/dev/shm") / f"agentgym-sandbox-test-{os.getpid()}"
    env = dict(os.environ, **{SECRET_ENV: SECRET_VALUE})
    server = start_server("--max-concurrency", "4", "--max-queue", "512", "--sandbox-uid", str(uid),
                          "--work-root", str(work_root), env=env)
    server.sandbox_uid, server.work_root = uid, work_root
    yield server
    stop_server(server)
    shutil.rmtree(work_root, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox_url(sandbox_server: ServerProcess) -> str:
    return sandbox_server.url


@pytest.fixture(scope="session")
def http(sandbox_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def run(http: httpx.Client):
    """POST /run_code with raw JSON (also the fields the sandbox_fusion client does not send); asserts HTTP 200."""

    def _run(**payload) -> dict:
        payload.setdefault("language", "python")
        resp = http.post("/run_code", json=payload)
        assert resp.status_code == 200, resp.text
        return resp.json()

    return _run


@pytest.fixture(scope="session")
def fork_server_ready(http: httpx.Client) -> None:
    """The fork server starts in the background (runs are cold until then): wait until it serves runs."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = http.get("/v1/stats").json()["fork_server"]
        if state == "ready":
            return
        assert state == "starting", f"the fork server is {state!r}: see the server's log"
        time.sleep(0.2)
    raise AssertionError("the fork server did not start within 120 s")
