"""Hostile programs: each test asserts the server survives and the next run starts from a clean slate."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from .conftest import SECRET_ENV, SECRET_VALUE, ServerProcess

CLEAN_PROBE = r"""
import json, os
procs = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print(json.dumps({'cwd': sorted(os.listdir('.')), 'tmp': os.listdir('/tmp'), 'shm': os.listdir('/dev/shm'),
                  'procs': procs, 'uid': os.getuid()}))
"""


def _proc_info(pid: int) -> tuple[int, str, bytes]:
    """(parent pid, pids-cgroup path, argv[0]) of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    cgroup = ""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "pids" in ctrls.split(",") or (ctrls == "" and not cgroup):
            cgroup = path
    return ppid, cgroup, Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]


def leftover_pids_of_uid(uid: int, server_pid: int) -> list[int]:
    """Processes of the sandbox uid, minus the fork server and the runs it prepared ahead.

    The fork server (bwrap, its zygote and the per-run keepers) lives in a `template-*` cgroup. A run prepared
    ahead is a cgroup holding one process, its init, whose parent is a keeper in the template cgroup (in the warm
    node pool, also the init's one child: the node waiting for its program); once a run ends its init has exited,
    so anything left in its cgroup counts as a leftover.
    """
    groups: dict[str, list[tuple[int, int, bytes]]] = {}
    cgroup_of: dict[int, str] = {}
    for pid in host_pids_of_uid(uid):
        try:
            ppid, cgroup, exe = _proc_info(pid)
        except OSError:
            continue
        groups.setdefault(cgroup, []).append((pid, ppid, exe))
        cgroup_of[pid] = cgroup
    leftovers = []
    for cgroup, members in groups.items():
        if cgroup.rpartition("/")[2].startswith("template-"):
            continue
        inits = [m for m in members if cgroup_of.get(m[1], "").rpartition("/")[2].startswith("template-")]
        waiting_node = [m for m in members if inits and m[1] == inits[0][0] and m[2] == b"node"]
        held = len(inits) == 1 and len(members) == 1 + len(waiting_node) and len(waiting_node) <= 1
        if not held:
            leftovers += [pid for pid, _, _ in members]
    return leftovers


def host_pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        pids.append(int(entry.name))
                    break
        except OSError:
            continue
    return pids


@pytest.fixture
def clean_after(sandbox_server: ServerProcess, run):
    """After the hostile run: server alive, nothing of it left on the host or visible to the next run."""
    yield
    assert sandbox_server.alive(), "the sandbox server died"
    deadline = time.monotonic() + 5
    uid, server_pid = sandbox_server.sandbox_uid, sandbox_server.proc.pid
    while leftover_pids_of_uid(uid, server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover_pids_of_uid(uid, server_pid) == [], "processes of the run survived it"
    def leftover_dirs() -> list[str]:  # removal happens just after the answer, so allow it a moment
        run_root = sandbox_server.work_root / f"server-{server_pid}"
        return [p.name for p in run_root.iterdir() if not p.name.startswith("warm-")]

    while leftover_dirs() and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    assert leftover_dirs() == [], "a run's work dir was left behind"
    out = run(code=CLEAN_PROBE)
    assert out["status"] == "Success", out
    state = json.loads(out["run_result"]["stdout"])
    assert state["cwd"] == ["main.py"]
    assert state["tmp"] == [] and state["shm"] == []
    assert state["procs"] == [1, 2]  # bwrap's init and the probe itself
    assert state["uid"] == 65534


pytestmark = pytest.mark.usefixtures("clean_after")


def test_fork_bomb(run):
    t0 = time.monotonic()
    out = run(code=":(){ :|:& };:; sleep 2", language="bash", run_timeout=3)
    assert out["status"] in ("Success", "Failed")
    assert time.monotonic() - t0 < 15


def test_python_fork_bomb_hits_pids_limit(run):
    code = ("import os\ncount = 0\n"
            "try:\n    while True:\n        if os.fork() == 0:\n            import time; time.sleep(60)\n"
            "        count += 1\n"
            "except OSError as e:\n    print('stopped after', count, e.errno)\n")
    out = run(code=code, run_timeout=5)
    stdout = out["run_result"]["stdout"]
    assert stdout.startswith("stopped after"), out
    assert int(stdout.split()[2]) < 300  # pids.max=256 stops it


def test_memory_hog_is_reported_distinctly(run):
    out = run(code="x = bytearray(2 * 1024 ** 3)\nprint('allocated')", memory_limit_MB=256, run_timeout=10)
    rr = out["run_result"]
    assert out["status"] == "Failed"
    assert rr["memory_limit_exceeded"] is True
    assert rr["return_code"] != 0
    assert "allocated" not in rr["stdout"]


def test_memory_hog_in_child_process(run):
    code = "python3 -c 'b = [bytearray(50 * 2**20) for _ in range(40)]'; echo child=$?"
    out = run(code=code, language="bash", memory_limit_MB=256)
    assert out["run_result"]["memory_limit_exceeded"] is True
    assert out["run_result"]["stdout"].strip() == "child=137"


def test_untouched_huge_mmap_is_fine(run):
    # Half the host's RAM (the kernel's overcommit heuristic allows it), far above the 256 MB limit:
    # only touched pages count, so this must work (an RLIMIT_AS-based limit would refuse it).
    size_gib = max(1, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2 // 1024 ** 3)
    code = (f"import mmap\nm = mmap.mmap(-1, {size_gib} * 1024 ** 3)\n"
            "m[0] = 1; m[-1] = 2\nprint('mapped', len(m) // 1024 ** 3)")
    out = run(code=code, memory_limit_MB=256)
    assert out["status"] == "Success", out
    assert out["run_result"]["stdout"] == f"mapped {size_gib}\n"
    assert out["run_result"]["memory_limit_exceeded"] is False


@pytest.mark.parametrize("where", [".", "/tmp", "/dev/shm"])
def test_disk_fill(run, where):
    code = (f"import os\nchunk = b'x' * (1 << 20)\nwritten = 0\n"
            f"try:\n    for i in range(100000):\n        with open(os.path.join({where!r}, f'f{{i}}'), 'wb') as f:\n"
            f"            for _ in range(64):\n                f.write(chunk); written += 1\n"
            f"except OSError as e:\n    print('stopped', written, e.errno)\n")
    out = run(code=code, memory_limit_MB=768, run_timeout=20)
    rr = out["run_result"]
    # Either the tmpfs size / file-size limit stops the writes, or the memory cgroup kills the writer.
    assert rr["stdout"].startswith("stopped") or rr["memory_limit_exceeded"], out
    if rr["stdout"].startswith("stopped"):
        assert int(rr["stdout"].split()[1]) <= 768


@pytest.mark.parametrize("where", [".", "/tmp"])
def test_inode_fill(run, where):
    code = (f"import os\nn = 0\n"
            f"try:\n    while True:\n        open(os.path.join({where!r}, f'i{{n}}'), 'w').close(); n += 1\n"
            f"except OSError as e:\n    print('stopped', n, e.errno)\n")
    out = run(code=code, memory_limit_MB=256, run_timeout=3)
    assert out["status"] == "Failed"  # out of memory, out of inodes or out of time: never the host's problem


def test_output_bomb_is_capped_and_stopped(run):
    out = run(code="yes", language="bash", run_timeout=20)
    rr = out["run_result"]
    assert rr["output_truncated"] is True
    assert len(rr["stdout"]) == 1 << 20
    assert rr["stdout"].startswith("y\ny\n")
    assert rr["execution_time"] < 15  # stopped by the output limit, not the timeout
    assert out["status"] == "Failed"


def test_printing_megabytes_finishes(run):
    code = "import sys\nfor i in range(100000):\n    sys.stdout.write('%08d' % i * 8 + '\\n')\nprint('done', file=sys.stderr)"
    out = run(code=code, run_timeout=20)
    rr = out["run_result"]
    assert out["status"] == "Success"
    assert rr["output_truncated"] is True
    assert len(rr["stdout"]) == 1 << 20
    assert rr["stderr"] == "done\n[sandbox] output truncated at 1048576 bytes per stream\n"


def test_cpu_spin_vs_sleep(run):
    spin = run(code="while True: pass", run_timeout=2)["run_result"]
    sleep = run(code="import time; time.sleep(100)", run_timeout=2)["run_result"]
    assert spin["status"] == sleep["status"] == "TimeLimitExceeded"
    # The 2 cores are shared with other work (load averages of 20 seen): the spin gets its share, not 2 s.
    assert spin["cpu_time"] > max(0.1, 5 * sleep["cpu_time"])
    assert sleep["cpu_time"] < 0.3


def test_sigstop_self(run):
    out = run(code="import os, signal\nprint('stopping', flush=True)\nos.kill(os.getpid(), signal.SIGSTOP)",
              run_timeout=2)
    assert out["run_result"]["status"] == "TimeLimitExceeded"
    assert out["run_result"]["stdout"] == "stopping\n"


def test_kill_all_processes(run):
    out = run(code="sleep 30 & kill -9 -1; echo survived; kill -9 -1", language="bash", run_timeout=5)
    assert out["run_result"]["stdout"] == "survived\n"


@pytest.mark.parametrize("code", [
    # classic double fork: the grandchild is re-parented and keeps the output pipes open
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n"
    "        print('daemon still alive')\n    os._exit(0)\nprint('parent done')",
])
def test_double_fork_daemon_dies_with_run(run, code):
    t0 = time.monotonic()
    out = run(code=code, run_timeout=10)
    assert out["status"] == "Success"
    assert out["run_result"]["stdout"] == "parent done\n"
    assert time.monotonic() - t0 < 8  # the daemon holding stdout did not make us wait


def test_setsid_nohup_child_dies_with_run(run):
    out = run(code="setsid nohup sleep 60 >/dev/null 2>&1 < /dev/null & disown; echo started", language="bash")
    assert out["run_result"]["stdout"] == "started\n"


def test_no_network_egress(run):
    code = ("import socket\nprint(sorted(n for _, n in socket.if_nameindex()))\n"
            "s = socket.socket(); s.settimeout(3)\n"
            "try:\n    s.connect(('192.0.2.1', 80)); print('connected')\n"
            "except OSError as e:\n    print('blocked', e.errno)\n")
    out = run(code=code)
    assert out["run_result"]["stdout"].splitlines()[0] == "['lo']"
    assert out["run_result"]["stdout"].splitlines()[1].startswith("blocked")


def test_cannot_reach_server_port(run, sandbox_url):
    port = urlparse(sandbox_url).port
    code = (f"import socket\ns = socket.socket(); s.settimeout(3)\n"
            f"try:\n    s.connect(('127.0.0.1', {port})); print('reached server')\n"
            f"except OSError as e:\n    print('refused', e.errno)\n")
    out = run(code=code)
    assert out["run_result"]["stdout"].startswith("refused")


def test_environment_and_proc_do_not_leak_server_secrets(run):
    code = ("import os, glob\nfound = []\n"
            "for f in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n"
            "    try:\n        data = open(f, 'rb').read()\n    except OSError:\n        continue\n"
            f"    if b{SECRET_VALUE!r} in data or b{SECRET_ENV!r} in data:\n        found.append(f)\n"
            f"print('env', {SECRET_ENV!r} in os.environ)\nprint('found', found)\n")
    out = run(code=code)
    assert out["run_result"]["stdout"] == "env False\nfound []\n"


def test_server_files_and_host_secrets_invisible(run, tmp_path):
    import sandbox_server
    secret = tmp_path / "host-secret.txt"
    secret.write_text("top secret")
    paths = [sandbox_server.__file__, str(secret), "/root", "/home", "/work", "/etc/shadow", "/proc/1/root/etc/shadow",
             "/sys/fs/cgroup"]
    code = ("import json, os\nres = {}\n"
            f"for p in {paths!r}:\n"
            "    try:\n        res[p] = os.listdir(p) if os.path.isdir(p) else open(p).read()[:20]\n"
            "    except OSError as e:\n        res[p] = 'denied %d' % e.errno\n"
            "print(json.dumps(res))")
    out = run(code=code)
    res = json.loads(out["run_result"]["stdout"])
    for p in paths:
        assert str(res[p]).startswith("denied"), (p, res[p])


@pytest.mark.parametrize("payload", [
    {"files": {"../escape.txt": "eA=="}},
    {"files": {"/etc/escape.txt": "eA=="}},
    {"files": {"a/../../escape.txt": "eA=="}},
    {"fetch_files": ["../../../etc/passwd"]},
    {"fetch_files": ["/etc/passwd"]},
])
def test_path_escapes_rejected(http: httpx.Client, payload):
    resp = http.post("/run_code", json={"code": "print(1)", "language": "python", **payload})
    assert resp.status_code == 422
    assert "work dir" in resp.text
    assert not Path("/escape.txt").exists() and not Path("/etc/escape.txt").exists()


def test_symlinks_out_of_workdir_not_fetched(run):
    code = ("import os\nos.symlink('/etc/passwd', 'link')\nos.symlink('/etc', 'dirlink')\n"
            "try:\n    os.link('/etc/passwd', 'hard')\nexcept OSError as e:\n    print('hardlink', e.errno)\n"
            "open('ok.txt', 'w').write('fine')\n")
    out = run(code=code, fetch_files=["link", "dirlink/passwd", "hard", "ok.txt"])
    assert out["status"] == "Success"
    assert set(out["files"]) == {"ok.txt"}
    assert "outside the work dir" in out["message"]


def test_cannot_write_system_dirs(run):
    code = ("import os\nres = []\n"
            "for p in ['/bin/evil', '/usr/bin/evil', '/etc/evil', '/evil']:\n"
            "    try:\n        open(p, 'w').write('x'); res.append('wrote ' + p)\n"
            "    except OSError as e:\n        res.append('denied')\n"
            "print(res)")
    out = run(code=code)
    assert out["run_result"]["stdout"] == "['denied', 'denied', 'denied', 'denied']\n"
    assert not Path("/usr/bin/evil").exists()


def test_huge_stdin(run):
    big = "x" * (50 << 20)
    ignored = run(code="print('ignored stdin')", stdin=big)
    assert ignored["status"] == "Success" and ignored["run_result"]["stdout"] == "ignored stdin\n"
    counted = run(code="import sys; print(len(sys.stdin.read()))", stdin=big)
    assert counted["run_result"]["stdout"] == f"{50 << 20}\n"
    echoed = run(code="cat", language="bash", stdin=big)
    assert echoed["run_result"]["output_truncated"] is True


@pytest.mark.slow
def test_64_concurrent_hostile_runs(sandbox_url):
    hostile = [
        {"code": ":(){ :|:& };:", "language": "bash"},
        {"code": "x = bytearray(1 << 31)", "language": "python", "memory_limit_MB": 128},
        {"code": "while True: pass", "language": "python"},
        {"code": "yes", "language": "bash"},
        {"code": "import os\nif os.fork() == 0:\n    os.setsid(); import time; time.sleep(60)\nprint('p')",
         "language": "python"},
        {"code": "kill -9 -1", "language": "bash"},
        {"code": "import os, signal; os.kill(os.getpid(), signal.SIGSTOP)", "language": "python"},
    ]

    async def scenario():
        async with httpx.AsyncClient(base_url=sandbox_url, timeout=300) as c:
            reqs = []
            for i in range(64):
                if i % 8 == 0:
                    reqs.append({"code": f"print({i} * 3)", "language": "python", "run_timeout": 30})
                else:
                    reqs.append({**hostile[i % len(hostile)], "run_timeout": 1})
            resps = await asyncio.gather(*[c.post("/run_code", json=r) for r in reqs])
            return reqs, resps

    reqs, resps = asyncio.run(scenario())
    assert [r.status_code for r in resps] == [200] * 64
    for i, resp in enumerate(resps):
        body = resp.json()
        assert body["status"] in ("Success", "Failed"), body
        if i % 8 == 0:
            assert body["run_result"]["stdout"] == f"{i * 3}\n"


@pytest.mark.parametrize("memory_mb", [4, 32])
def test_tiny_memory_limit_is_reported_not_crashed(run, memory_mb):
    out = run(code="x = bytearray(100 * 2**20)\nprint('fits')", memory_limit_MB=memory_mb)
    assert out["status"] == "Failed", out
    assert out["run_result"]["memory_limit_exceeded"] is True
