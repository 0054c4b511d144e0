"""The sandbox image, run the way users run it (docker compose, host-network override): API conformance with
Sandbox Fusion's wire format, a few attacks, and the container's privilege posture."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import sandbox_fusion
import yaml

if TYPE_CHECKING:
    from conftest import ComposeService

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]


def run_code(svc: ComposeService, **request) -> dict:
    r = httpx.post(f"{svc.url}/run_code", json=request, timeout=120)
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text}"
    return r.json()


MARK = "left_by_previous_run"
# Hostile snippets leave this file behind wherever they can write; the next run must not see any of them.
LEAVE_MARKS = f"for d in . /tmp /dev/shm; do echo x > $d/{MARK} 2>/dev/null; done; "


def assert_healthy(svc: ComposeService) -> None:
    """The server still answers and a fresh run sees a clean sandbox."""
    # ps's output is taken whole before it is counted: in a pipeline, grep's side may still be a forked bash
    # (not yet exec'd) while ps lists the processes, and counts as a second bash.
    out = run_code(svc, language="bash",
                   code=f"ls -a . /tmp /dev/shm | grep -c {MARK}; procs=$(ps -e -o comm=); grep -c '^bash$' <<< \"$procs\"")
    assert out["run_result"]["stdout"].split() == ["0", "1"], out  # no marks; no bash but this one


def test_default_compose_publishes_localhost_8080(compose_commands: list[list[str]]) -> None:
    """`docker compose up` without -f (docker-compose.yml + .override.yml) serves the URL the code tool defaults to."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTGYM_")}
    for compose in compose_commands:
        out = subprocess.run([*compose, "config"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        config = yaml.safe_load(out.stdout)
        ports = config["services"]["sandbox"]["ports"]
        published = [(p["host_ip"], str(p["published"]), p["target"]) if isinstance(p, dict) else tuple(p.rsplit(":", 2))
                     for p in ports]
        assert published in ([("127.0.0.1", "8080", 8080)], [("127.0.0.1", "8080", "8080/tcp")]), ports
        assert "network_mode" not in config["services"]["sandbox"]


def test_ping(compose_service: ComposeService) -> None:
    r = httpx.get(f"{compose_service.url}/v1/ping", timeout=10)
    assert r.status_code == 200 and r.json() == "pong"


def test_python_hello_and_stdin(compose_service: ComposeService) -> None:
    out = run_code(compose_service, language="python", code="import sys; print('hello', sys.stdin.read().strip())",
                   stdin="world")
    assert out["status"] == "Success", out
    assert out["compile_result"] is None
    run = out["run_result"]
    assert (run["status"], run["return_code"], run["stdout"]) == ("Finished", 0, "hello world\n")


def test_status_rules(compose_service: ComposeService) -> None:
    failed = run_code(compose_service, language="bash", code="echo out; echo err >&2; exit 3")
    assert failed["status"] == "Failed"
    assert failed["run_result"]["return_code"] == 3
    assert (failed["run_result"]["stdout"], failed["run_result"]["stderr"]) == ("out\n", "err\n")

    slow = run_code(compose_service, language="python", code="import time; time.sleep(30)", run_timeout=1)
    assert slow["status"] == "Failed"
    assert slow["run_result"]["status"] == "TimeLimitExceeded"
    assert slow["run_result"]["return_code"] is None

    bad = httpx.post(f"{compose_service.url}/run_code", json={"language": "python"}, timeout=30)
    assert bad.status_code == 422 and "code" in bad.text


def test_compile_error(compose_service: ComposeService) -> None:
    out = run_code(compose_service, language="cpp", code="int main( { return 0 }")
    assert out["status"] == "Failed", out
    assert out["compile_result"]["status"] == "Finished"
    assert out["compile_result"]["return_code"] != 0
    assert "error" in out["compile_result"]["stderr"]
    assert out["run_result"] is None
    ok = run_code(compose_service, language="cpp",
                  code="#include <iostream>\nint main() { std::cout << 6 * 7 << std::endl; }")
    assert ok["status"] == "Success" and ok["run_result"]["stdout"] == "42\n", ok


def test_sandbox_fusion_client(compose_service: ComposeService) -> None:
    resp = sandbox_fusion.run_code(
        sandbox_fusion.RunCodeRequest(code="print(sum(range(10)))", language="python"),
        endpoint=compose_service.url, max_attempts=1, client_timeout=60)
    assert resp.status == sandbox_fusion.RunStatus.Success
    assert resp.run_result.stdout == "45\n"


def test_fork_bomb_is_contained(compose_service: ComposeService) -> None:
    out = run_code(compose_service, language="bash", code=LEAVE_MARKS + ":(){ :|:& };:", run_timeout=5)
    assert out["status"] in ("Failed", "Success"), out
    assert_healthy(compose_service)


def test_no_network_egress(compose_service: ComposeService) -> None:
    port = compose_service.url.rsplit(":", 1)[1]
    code = f"""
import os, socket
print([name for _, name in socket.if_nameindex()])
for host, port in (("127.0.0.1", {port}), ("1.1.1.1", 53)):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, port)); print("CONNECTED", host)
    except OSError as e:
        print("blocked", host, type(e).__name__)
try:
    socket.getaddrinfo("pypi.org", 443); print("RESOLVED")
except OSError:
    print("no dns")
"""
    out = run_code(compose_service, language="python", code=code)
    stdout = out["run_result"]["stdout"]
    assert "['lo']" in stdout, out
    assert "CONNECTED" not in stdout and "RESOLVED" not in stdout, out
    assert stdout.count("blocked") == 2, out


def test_host_env_and_files_invisible(compose_service: ComposeService) -> None:
    code = r"""
import glob, os
print("ENV", dict(os.environ))
for path in glob.glob('/proc/*/environ') + ['/proc/1/cmdline']:
    try:
        print(path, open(path, 'rb').read())
    except OSError as e:
        print(path, 'denied', type(e).__name__)
for path in ('/opt/agentgym/sandbox_server/settings.py', '/opt/venv', '/run/agentgym', '/root'):
    print(path, 'EXISTS' if os.path.exists(path) else 'absent')
try:
    open('/usr/bin/pwned', 'w'); print('WROTE /usr/bin')
except OSError as e:
    print('usr readonly', type(e).__name__)
"""
    out = run_code(compose_service, language="python", code=code)
    text = out["run_result"]["stdout"] + out["run_result"]["stderr"]
    assert out["status"] == "Success", out
    assert compose_service.canary not in text, "the server's environment leaked into the sandbox"
    assert "SANDBOX_PORT" not in text and "EXISTS" not in text and "WROTE" not in text, text
    assert "usr readonly" in text


def test_no_nested_namespaces_or_mounts(compose_service: ComposeService) -> None:
    out = run_code(compose_service, language="bash",
                   code=LEAVE_MARKS + "unshare -U true && echo NESTED_USERNS; mount -t tmpfs x /tmp 2>/dev/null && echo MOUNTED; "
                        "echo done")
    assert out["run_result"]["stdout"].strip().splitlines()[-1] == "done", out
    assert "NESTED_USERNS" not in out["run_result"]["stdout"] and "MOUNTED" not in out["run_result"]["stdout"], out
    assert_healthy(compose_service)


def test_container_seccomp_profile_in_force(compose_service: ComposeService) -> None:
    """Sandboxed code meets the container's profile: bpf refused (EPERM), io_uring absent (ENOSYS)."""
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
numbers = {"x86_64": (321, 425, 39), "aarch64": (280, 425, 172)}[os.uname().machine]
for name, nr in zip(("bpf", "io_uring_setup", "getpid"), numbers):
    ret = libc.syscall(nr, 0, 0, 0)
    print(name, ret if ret >= 0 else -ctypes.get_errno())
"""
    out = run_code(compose_service, language="python", code=code)
    lines = dict(line.split() for line in out["run_result"]["stdout"].splitlines())
    assert lines["bpf"] == "-1" and lines["io_uring_setup"] == "-38", out
    assert int(lines["getpid"]) > 0, out


def test_server_runs_without_sys_admin(compose_service: ComposeService) -> None:
    """CAP_SYS_ADMIN is for container_init.sh only; the server (and so every sandbox) never holds it."""
    script = "for p in $(pgrep -f '[-]m sandbox_server --host'); do grep CapBnd /proc/$p/status; done"
    out = subprocess.run(["docker", "exec", compose_service.container_id(), "sh", "-c", script],
                         capture_output=True, text=True, timeout=60)
    masks = [int(line.split()[1], 16) for line in out.stdout.splitlines()]
    assert masks, f"server process not found: {out.stdout} {out.stderr}"
    cap_sys_admin = 1 << 21
    assert all(not m & cap_sys_admin for m in masks), out.stdout


def test_fork_server_runs_or_falls_back_cold_with_a_warning(compose_service: ComposeService) -> None:
    """Inside the container the fork server either serves python runs (pid 1 of a run is `python3 - N`) or, where
    the container forbids what it needs, the server says why in its log and every run is cold (pid 1 bwrap)."""
    import time
    deadline = time.monotonic() + 120
    while True:
        state = httpx.get(f"{compose_service.url}/v1/stats", timeout=30).json()["fork_server"]
        if state != "starting" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out = run_code(compose_service, language="python", code="print(open('/proc/1/cmdline').read().split(chr(0))[0])")
    assert out["status"] == "Success", out
    pid1 = out["run_result"]["stdout"].strip()
    print(f"fork server in the container: {state}; a python run's pid 1: {pid1}")
    if state == "ready":
        assert pid1 == "python3", out
    else:
        assert state == "off", state
        logs = subprocess.run(["docker", "logs", compose_service.container_id()], capture_output=True, text=True,
                              timeout=60)
        assert "fork server could not start" in logs.stdout + logs.stderr, (logs.stdout + logs.stderr)[-3000:]
        assert pid1.endswith("bwrap"), out
