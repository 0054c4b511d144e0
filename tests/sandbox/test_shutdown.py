"""SIGTERM with runs in flight: they are answered, and nothing is left behind or logged as a problem."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from .conftest import start_server
from .test_security import host_pids_of_uid


def test_sigterm_with_runs_in_flight_is_clean():
    uid = 65000 + os.getpid() % 300
    work_root = Path("/dev/shm") / f"agentgym-sandbox-term-{os.getpid()}"
    server = start_server("--sandbox-uid", str(uid), "--work-root", str(work_root), "--log-level", "info")
    answers: list[int] = []

    def call(language: str, code: str) -> None:
        try:
            answers.append(httpx.post(server.url + "/run_code", json={"code": code, "language": language},
                                      timeout=30).status_code)
        except httpx.HTTPError:
            answers.append(-1)

    calls = [threading.Thread(target=call, args=args) for args in
             [("python", "import time; time.sleep(3)")] * 3 + [("bash", "sleep 3 & sleep 3; wait")]]
    for t in calls:
        t.start()
    time.sleep(1.5)
    server.proc.send_signal(signal.SIGTERM)
    log, _ = server.proc.communicate(timeout=30)
    for t in calls:
        t.join()
    assert answers == [200] * 4, (answers, log)
    for bad in ("Unknown child", "WARNING", "ERROR", "Traceback"):
        assert bad not in log, log
    deadline = time.monotonic() + 5
    while host_pids_of_uid(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host_pids_of_uid(uid) == []
    assert list(work_root.iterdir()) == [], list(work_root.iterdir())
    cgroups = [p for p in Path("/sys/fs/cgroup").glob(f"*/**/agentgym-sandbox-{server.proc.pid}")]
    assert cgroups == []
    work_root.rmdir()


def test_mounts_of_a_killed_server_are_removed_by_the_next():
    from sandbox_server.workdirs import mounts_under

    work_root = Path("/dev/shm") / f"agentgym-sandbox-kill-{os.getpid()}"
    first = start_server("--work-root", str(work_root), "--sandbox-uid", str(64000 + os.getpid() % 300))
    try:
        deadline = time.monotonic() + 10
        while not mounts_under(work_root) and time.monotonic() < deadline:  # the warm pool's work dirs
            time.sleep(0.1)
        left = mounts_under(work_root)
        assert left and all(f"server-{first.proc.pid}/" in p for p in left), left
    finally:
        first.proc.kill()
        first.proc.wait()
    assert mounts_under(work_root) == left  # SIGKILL: nothing could clean up
    second = start_server("--work-root", str(work_root), "--warm-pool-size", "0")
    try:
        assert mounts_under(work_root) == []
        assert [p.name for p in work_root.iterdir()] == [f"server-{second.proc.pid}"]
    finally:
        second.proc.terminate()
        second.proc.wait(timeout=15)
    assert mounts_under(work_root) == [] and list(work_root.iterdir()) == []
    work_root.rmdir()
