"""The embedded default: no URL configured, the tool starts the sandbox server itself, shares it, restarts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agentgym.tools.embedded_sandbox import EmbeddedSandbox, shared_embedded_sandbox
from agentgym.tools.sandbox_fusion import SandboxFusionTool


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


async def run(tool, code):
    iid, _ = await tool.create()
    try:
        return await tool.execute(iid, {"code": code})
    finally:
        await tool.release(iid)


@pytest.mark.slow
async def test_no_url_starts_one_shared_server_and_restarts_it_when_it_dies():
    first = SandboxFusionTool({"enable_global_rate_limit": False}, None)
    second = SandboxFusionTool({"sandbox_fusion_url": "", "enable_global_rate_limit": False, "num_workers": 2}, None)
    resp, _, m = await run(first, "print('embedded')")
    assert resp.text == "Exit code: 0\n--- stdout ---\nembedded", resp.text
    server = shared_embedded_sandbox()
    pid = server.pid
    assert pid is not None and server.url().startswith("http://127.0.0.1:")
    resp, _, m = await run(second, "print(2)")
    assert m["outcome"] == "success" and server.pid == pid, "both tools must use the process's one server"

    starts = server.starts
    os.killpg(pid, signal.SIGKILL)
    assert _wait_dead(pid)
    resp, _, m = await run(first, "print('after restart')")
    assert m["outcome"] == "success", resp.text
    assert server.pid not in (None, pid) and server.starts == starts + 1


async def test_stop_ends_the_server_and_a_later_call_starts_a_new_one():
    server = EmbeddedSandbox()
    try:
        url = await server.aurl()
        pid = server.pid
        assert url.startswith("http://127.0.0.1:") and pid is not None
        server.stop()
        assert _wait_dead(pid)
        assert (await server.aurl()) and server.pid not in (None, pid)
    finally:
        server.stop()


async def test_a_server_that_cannot_start_gives_the_model_an_error_with_the_reason():
    tool = SandboxFusionTool(
        {"enable_global_rate_limit": False, "embedded_server_args": ["--no-such-flag"], "embedded_startup_timeout": 20},
        None,
    )
    started = time.monotonic()
    resp, _, m = await run(tool, "print(1)")
    assert m["outcome"] == "unavailable" and m["infrastructure_failure"]
    assert resp.text.startswith("Sandbox error: the code could not be run (the sandbox server could not be started)")
    assert "unrecognized arguments: --no-such-flag" in m["error"]
    assert "set sandbox_fusion_url" in m["error"]
    assert time.monotonic() - started < 20


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from agentgym.tools.embedded_sandbox import shared_embedded_sandbox
    from agentgym.tools.sandbox_fusion import SandboxFusionTool, aclose_http_sessions

    async def main():
        tool = SandboxFusionTool({"enable_global_rate_limit": False}, None)
        iid, _ = await tool.create()
        resp, _, m = await tool.execute(iid, {"code": "print(7)"})
        assert m["outcome"] == "success", resp.text
        print("PID", shared_embedded_sandbox().pid, flush=True)
        await aclose_http_sessions()
        if sys.argv[1] == "hang":
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "killed"])
def test_server_goes_away_with_the_process_that_started_it(how):
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "hang" if how == "killed" else "exit"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = None
    for line in proc.stdout:
        if line.startswith("PID "):
            pid = int(line.split()[1])
            break
    assert pid is not None, proc.stderr.read()
    assert _alive(pid)
    if how == "killed":
        proc.kill()  # no atexit: the server must still die (it is told to when its supervisor goes)
    proc.wait(30)
    assert _wait_dead(pid), f"sandbox server {pid} outlived its parent ({how})"
