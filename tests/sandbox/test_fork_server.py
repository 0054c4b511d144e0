"""The fork server's runs: nothing of one run reaches the next, runs in flight cannot reach each other, user code
holds no privilege, every run under load is forked (not cold), and a dead fork server is replaced."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from .test_security import host_pids_of_uid

pytestmark = pytest.mark.usefixtures("fork_server_ready")

FORKED_INIT = "python3\0-\0"  # /proc/1/cmdline of a forked run (a cold run's pid 1 is bwrap)

PLANT = r'''
import collections, json, os, socket, subprocess, sys
for d in ("/tmp", "/workspace", "/dev/shm"):
    open(os.path.join(d, "leak"), "w").write("left behind")
os.environ["LEAK"] = "1"
os.putenv("LEAK_PUTENV", "1")
json.dumps = lambda *a, **k: "patched"
collections.Counter = None
sys.modules["leaked_module"] = sys
sys.path.append("/leak")
subprocess.Popen(["sleep", "300"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        import time; time.sleep(300)
    os._exit(0)
s = socket.socket(socket.AF_UNIX); s.bind("\0agentgym-leak"); s.listen()
globals()["keep"] = s
print("planted")
'''

CHECK = r'''
import collections, json, os, socket, sys
seen = {
    "files": [p for p in ("/tmp/leak", "/workspace/leak", "/dev/shm/leak") if os.path.exists(p)],
    "env": [k for k in os.environ if k.startswith("LEAK")],
    "dumps": json.dumps([1]),
    "counter": collections.Counter("aab")["a"],
    "module": "leaked_module" in sys.modules,
    "path": "/leak" in sys.path,
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "workspace": sorted(os.listdir("/workspace")),
    "cmdline": open("/proc/1/cmdline").read(),
}
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("\0agentgym-leak")
    seen["socket"] = True
except OSError:
    seen["socket"] = False
print(json.dumps(seen))
'''


def test_nothing_of_one_run_reaches_the_next(run):
    for _ in range(3):
        planted = run(code=PLANT)
        assert planted["run_result"]["stdout"] == "planted\n", planted
        for _ in range(2):
            out = run(code=CHECK)
            assert out["status"] == "Success", out
            seen = json.loads(out["run_result"]["stdout"])
            assert seen["cmdline"].startswith(FORKED_INIT)  # both runs took the fork server's path
            assert seen["files"] == [] and seen["env"] == [] and seen["dumps"] == "[1]" and seen["counter"] == 2
            assert not seen["module"] and not seen["path"] and not seen["socket"]
            assert seen["workspace"] == ["main.py"]
            assert len(seen["pids"]) == 2, seen["pids"]  # its init and itself: no process of the planting run


LISTEN = r'''
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 47231)); s.listen()
u = socket.socket(socket.AF_UNIX); u.bind("\0agentgym-peer"); u.listen()
print("listening", flush=True)
open("/tmp/peer", "w").write("x")
time.sleep(6)
'''

PROBE_PEER = r'''
import os, socket, time
time.sleep(1.5)
res = []
for family, addr in ((socket.AF_INET, ("127.0.0.1", 47231)), (socket.AF_UNIX, "\0agentgym-peer")):
    s = socket.socket(family)
    try:
        s.connect(addr); res.append("connected")
    except OSError as e:
        res.append(type(e).__name__)
print(res, os.path.exists("/tmp/peer"))
'''


def test_runs_in_flight_cannot_reach_each_other(sandbox_url):
    def post(code: str, timeout: float) -> dict:
        return httpx.post(f"{sandbox_url}/run_code", json={"language": "python", "code": code,
                                                           "run_timeout": timeout}, timeout=120).json()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        listener = pool.submit(post, LISTEN, 10)
        prober = pool.submit(post, PROBE_PEER, 10)
        out = prober.result()
        assert listener.result()["run_result"]["stdout"].startswith("listening")
    assert out["run_result"]["stdout"] == "['ConnectionRefusedError', 'ConnectionRefusedError'] False\n", out


PRIVILEGES = r'''
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
res = {k: status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Uid")}
res["userns"] = libc.unshare(0x10000000) == 0
res["mountns"] = libc.unshare(0x00020000) == 0
res["mount"] = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0
try:
    open("/proc/sys/kernel/hostname", "w").write("x"); res["procsys"] = "writable"
except OSError:
    res["procsys"] = "read-only"
res["cgroup"] = open("/proc/self/cgroup").read()
print(json.dumps(res))
'''


def test_forked_code_holds_no_privilege(run):
    out = run(code=PRIVILEGES)
    res = json.loads(out["run_result"]["stdout"])
    assert res["CapEff"] == res["CapPrm"] == res["CapBnd"] == res["CapAmb"] == "0000000000000000"
    assert res["NoNewPrivs"] == "1" and res["Uid"].split()[0] == "65534"
    assert not res["userns"] and not res["mountns"] and not res["mount"]
    assert res["procsys"] == "read-only"
    assert all(line.endswith(":/") for line in res["cgroup"].splitlines())  # its own cgroup namespace


def test_every_run_under_load_is_forked(sandbox_url):
    """64 python runs at once (4 run at a time on the test server): each waits for a forked sandbox rather than
    falling back to a cold one, and each gets its own."""
    code = "import os; print(open('/proc/1/cmdline').read()[:10], os.getpid())"

    def post(_: int) -> dict:
        return httpx.post(f"{sandbox_url}/run_code", json={"language": "python", "code": code},
                          timeout=300).json()

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        outs = list(pool.map(post, range(64)))
    assert all(o["status"] == "Success" for o in outs), [o for o in outs if o["status"] != "Success"][:1]
    assert all(o["run_result"]["stdout"] == f"{FORKED_INIT[:10]} 2\n" for o in outs), outs[0]


def _zygote_pid(uid: int) -> int:
    for pid in host_pids_of_uid(uid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if cmd.startswith(b"python3\0-\0") and "/template-" in cgroups and parent.startswith(b"/usr/bin/bwrap"):
            return pid
    raise AssertionError("no fork server process found")


def test_a_killed_fork_server_is_replaced(sandbox_server, run):
    os.kill(_zygote_pid(sandbox_server.sandbox_uid), signal.SIGKILL)
    for _ in range(3):  # answered all the same (cold while it restarts)
        assert run(code="print(6 * 7)")["run_result"]["stdout"] == "42\n"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = run(code="print(open('/proc/1/cmdline').read()[:10])")
        if out["run_result"]["stdout"] == FORKED_INIT[:10] + "\n":
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the fork server did not come back")


INIT_TAKEOVER = r'''
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
res = {"ptrace": libc.ptrace(16, 1, 0, 0), "errno": ctypes.get_errno()}  # PTRACE_ATTACH to the run's init
try:
    open("/proc/1/mem", "rb").read(1)
    res["mem"] = "read"
except OSError as e:
    res["mem"] = type(e).__name__
res["init_fds"] = sorted(os.listdir("/proc/1/fd")) if os.access("/proc/1/fd", os.R_OK) else None
print(json.dumps(res))
'''


def test_the_program_cannot_take_over_its_init(run):
    """The run's init keeps a socket to the server (it reports its phase timestamps); the program runs as the
    same uid, so the init is made non-dumpable: no ptrace, no /proc/1/mem, no look at its fds."""
    out = run(code=INIT_TAKEOVER)
    res = json.loads(out["run_result"]["stdout"])
    assert res["ptrace"] == -1 and res["errno"] == 1, res  # EPERM
    assert res["mem"] == "PermissionError" and res["init_fds"] is None, res


def test_stdin_larger_than_a_pipe_reaches_a_forked_run(run):
    data = "".join(f"{i}\n" for i in range(200_000))  # ~1.3 MB: more than the 64 KiB pipe buffer
    out = run(code="import sys; d = sys.stdin.read(); print(len(d), d.count(chr(10)))", stdin=data)
    assert out["run_result"]["stdout"] == f"{len(data)} 200000\n", out


def test_a_program_that_ignores_a_large_stdin_still_finishes(run):
    out = run(code="print('no read')", stdin="x" * (4 << 20))
    assert out["status"] == "Success" and out["run_result"]["stdout"] == "no read\n", out


def test_stats_report_where_forked_runs_spend_their_time(http, run):
    for _ in range(3):
        assert run(code="print(1)")["status"] == "Success"
    phases = http.get("/v1/stats").json()["fork_phases"]
    expected = {"acquire", "arm", "to_init", "init_setup", "program", "init_exit", "to_server", "collect", "request"}
    assert set(phases) == expected, phases
    for name, st in phases.items():
        assert st["runs"] >= 3 and 0 <= st["p50_ms"] <= st["p95_ms"], (name, st)
    inside = sum(phases[n]["mean_ms"] for n in ("to_init", "init_setup", "program", "init_exit", "to_server"))
    assert inside <= phases["request"]["mean_ms"] + 1e-3, phases


def test_the_pool_is_refilled_after_runs_that_found_it_ready(http, run):
    """Refills of runs taken while others were still ready wait until the run is answered (off the request
    path), but they do happen: the pool is full again afterwards, not left at its reserve."""
    size = http.get("/v1/stats").json()["fork_pool"]["size"]
    for _ in range(size + 2):
        assert run(code="print(1)")["status"] == "Success"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pool = http.get("/v1/stats").json()["fork_pool"]
        if pool["ready"] == size:
            break
        time.sleep(0.1)
    assert pool["ready"] == size, pool
