"""Sandbox Fusion wire compatibility, checked with the real `sandbox_fusion` client package."""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
from pathlib import Path

import httpx
import pytest
import sandbox_fusion as sf

from .conftest import start_server, stop_server


def _req(code: str, language: str = "python", **kw) -> sf.RunCodeRequest:
    return sf.RunCodeRequest(code=code, language=language, **kw)


def test_ping(http: httpx.Client):
    resp = http.get("/v1/ping")
    assert resp.status_code == 200
    assert resp.json() == "pong"


def test_python_hello_with_client(sandbox_url: str):
    resp = sf.run_code(_req("print('hello ' + str(6 * 7))"), endpoint=sandbox_url, max_attempts=1)
    assert resp.status == sf.RunStatus.Success
    assert resp.message == ""
    assert resp.compile_result is None
    assert resp.run_result.status == sf.CommandRunStatus.Finished
    assert resp.run_result.return_code == 0
    assert resp.run_result.stdout == "hello 42\n"
    assert resp.run_result.stderr == ""
    assert resp.run_result.execution_time > 0
    assert sf.summary_run_code_result(resp, sf.SummaryMapping()) == "Success"


def test_bash_stdin_with_client(sandbox_url: str):
    code = 'read a; read b; echo "sum=$((a + b))"; echo err >&2'
    resp = sf.run_code(_req(code, "bash", stdin="40\n2\n"), endpoint=sandbox_url, max_attempts=1)
    assert resp.status == sf.RunStatus.Success
    assert resp.run_result.stdout == "sum=42\n"
    assert resp.run_result.stderr == "err\n"


async def test_async_client(sandbox_url: str):
    resps = await asyncio.gather(*[
        sf.run_code_async(_req(f"print({i} * 2)"), endpoint=sandbox_url, max_attempts=1) for i in range(6)])
    assert [r.run_result.stdout for r in resps] == [f"{i * 2}\n" for i in range(6)]


def test_nonzero_exit_is_failed(sandbox_url: str):
    resp = sf.run_code(_req("import sys; print('x'); sys.exit(3)"), endpoint=sandbox_url, max_attempts=1)
    assert resp.status == sf.RunStatus.Failed
    assert resp.run_result.status == sf.CommandRunStatus.Finished
    assert resp.run_result.return_code == 3
    assert resp.run_result.stdout == "x\n"
    assert sf.summary_run_code_result(resp, sf.SummaryMapping(RunFailed="RF")) == "RF"


def test_exception_traceback_in_stderr(sandbox_url: str):
    resp = sf.run_code(_req("raise ValueError('boom')"), endpoint=sandbox_url, max_attempts=1)
    assert resp.status == sf.RunStatus.Failed
    assert resp.run_result.return_code == 1
    assert "ValueError: boom" in resp.run_result.stderr


def test_timeout_is_failed_with_null_return_code(sandbox_url: str):
    code = "import time\nprint('started', flush=True)\ntime.sleep(30)"
    resp = sf.run_code(_req(code, run_timeout=1), endpoint=sandbox_url, max_attempts=1)
    assert resp.status == sf.RunStatus.Failed
    assert resp.run_result.status == sf.CommandRunStatus.TimeLimitExceeded
    assert resp.run_result.return_code is None
    assert resp.run_result.stdout == "started\n"
    assert 0.9 < resp.run_result.execution_time < 5
    assert sf.summary_run_code_result(resp, sf.SummaryMapping(RunTimeout="TO")) == "TO"


def test_files_and_fetch_files_roundtrip(sandbox_url: str):
    code = ("import os\n"
            "data = open('in/data.txt').read()\n"
            "os.makedirs('out', exist_ok=True)\n"
            "open('out/result.txt', 'w').write(data.upper())\n"
            "open('bin.dat', 'wb').write(bytes(range(256)))\n")
    files = {"in/data.txt": base64.b64encode(b"hello files").decode(), "ignored.txt": None}
    resp = sf.run_code(_req(code, files=files, fetch_files=["out/result.txt", "bin.dat", "missing.txt"]),
                       endpoint=sandbox_url, max_attempts=1)
    assert resp.status == sf.RunStatus.Success, resp.run_result.stderr
    assert base64.b64decode(resp.files["out/result.txt"]) == b"HELLO FILES"
    assert base64.b64decode(resp.files["bin.dat"]) == bytes(range(256))
    assert "missing.txt" not in resp.files


def test_verl_style_raw_json(run):
    # verl's sandbox_fusion utils post this shape and read these keys.
    out = run(code="print(input()[::-1])", stdin="abc\n", compile_timeout=10, run_timeout=10,
              memory_limit_MB=512, language="python", files={}, fetch_files=[])
    assert out["status"] == "Success"
    assert out["run_result"]["stdout"] == "cba\n"
    assert set(out) >= {"status", "message", "compile_result", "run_result", "executor_pod_name", "files"}
    assert set(out["run_result"]) >= {"status", "execution_time", "return_code", "stdout", "stderr"}


def test_extension_fields(run):
    out = run(code="s = sum(i * i for i in range(3_000_000)); print(s)")
    rr = out["run_result"]
    assert rr["cpu_time"] > 0
    assert rr["memory_limit_exceeded"] is False
    assert rr["output_truncated"] is False


@pytest.mark.parametrize("payload", [
    {"language": "python"},                                        # no code
    {"code": "print(1)"},                                          # no language
    {"code": "print(1)", "language": "python", "run_timeout": "soon"},
    {"code": "print(1)", "language": "python", "files": ["a"]},
    {"code": "print(1)", "language": "cobol-74"},
    {"code": "print(1)", "language": "python", "files": {"x": "!!not base64!!"}},
    {"code": "print(1)", "language": "python", "run_timeout": -1},
])
def test_malformed_request_is_422_with_reason(http: httpx.Client, payload):
    resp = http.post("/run_code", json=payload)
    assert resp.status_code == 422
    assert resp.json()["detail"]


def test_unknown_language_message_lists_available(http: httpx.Client):
    resp = http.post("/run_code", json={"code": "x", "language": "cobol-74"})
    assert resp.status_code == 422
    assert "python" in resp.json()["detail"]


def test_oversized_body_is_413(sandbox_url: str):
    with httpx.Client(base_url=sandbox_url, timeout=60) as c:
        resp = c.post("/run_code", content=b'{"code": "' + b"x" * (129 << 20) + b'", "language": "python"}',
                      headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_overload_answers_503_quickly():
    server = start_server("--max-concurrency", "1", "--max-queue", "1")
    try:
        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
                slow = {"code": "import time; time.sleep(5)", "language": "python"}
                busy = [asyncio.create_task(c.post("/run_code", json=slow)) for _ in range(2)]
                for _ in range(200):  # until one runs and one waits
                    stats = (await c.get("/v1/stats")).json()
                    if stats["running"] == 1 and stats["waiting"] == 1:
                        break
                    await asyncio.sleep(0.05)
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                rejected = await c.post("/run_code", json={"code": "print(1)", "language": "python"})
                took = loop.time() - t0
                done = await asyncio.gather(*busy)
                return stats, rejected, took, done

        stats, rejected, took, done = asyncio.run(scenario())
        assert stats["running"] == 1 and stats["waiting"] == 1, stats
        assert rejected.status_code == 503
        assert "retry" in rejected.json()["detail"]
        assert took < 2.5  # answered at once, not after the 5 s runs
        assert [r.status_code for r in done] == [200, 200]
        assert all(r.json()["status"] == "Success" for r in done)
    finally:
        stop_server(server)


def test_queue_bound_holds_for_simultaneous_arrivals():
    server = start_server("--max-concurrency", "1", "--max-queue", "0")
    try:
        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
                req = {"code": "import time; time.sleep(1)", "language": "python"}
                return await asyncio.gather(*(c.post("/run_code", json=req) for _ in range(4)))

        codes = sorted(r.status_code for r in asyncio.run(scenario()))
        assert codes == [200, 503, 503, 503]
    finally:
        stop_server(server)


def test_refuses_to_start_without_bubblewrap(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no bwrap on PATH
    with pytest.raises(RuntimeError, match="refusing to start.*bubblewrap"):
        start_server(env=env, timeout=30)


def test_insecure_mode_starts_and_runs(tmp_path):
    server = start_server("--insecure-no-isolation", "--work-root", str(tmp_path / "runs"))
    try:
        resp = sf.run_code(_req("print('unconfined')"), endpoint=server.url, max_attempts=1)
        assert resp.run_result.stdout == "unconfined\n"
    finally:
        stop_server(server)


def test_limits_follow_the_request_on_warm_and_cold_paths(run):
    probe = "import resource, sys\nprint(resource.getrlimit(resource.RLIMIT_CPU)[0], sys.argv[1:])"
    warm = run(code=probe, run_timeout=3)  # plain python runs come from the pre-started pool
    cold = run(code=probe, run_timeout=7, args=["x", "y"])  # args force a freshly started sandbox
    assert warm["run_result"]["stdout"] == "4 []\n"
    assert cold["run_result"]["stdout"] == "8 ['x', 'y']\n"
    bash = run(code="ulimit -t; ulimit -n; ulimit -c", language="bash", run_timeout=5)
    assert bash["run_result"]["stdout"].split() == ["6", "1024", "0"]


SEMANTICS_PROBES = [
    "import sys, os\nprint(__name__, __file__, sys.argv, sys.path[0], os.getcwd())",
    "import sys\nprint(sys.stdin.readline().strip()[::-1]); print(input())",
    "raise KeyError('k')",
    "def f():\n    1 / 0\ntry:\n    f()\nexcept Exception as e:\n    raise ValueError('wrapped') from e",
    "import warnings\nwarnings.warn('careful')\nprint(__builtins__.__name__, __spec__, __package__)",
    "def f(:\n    pass",
    "import sys\nprint('bye'); sys.exit(7)",
    "import sys\nsys.exit('fatal message')",
    "import os\nos.write(0 if False else 1, b'raw\\n')\nimport os; print(len(os.read(0, 100)))",
    "import pickle\nclass A: pass\nprint(type(pickle.loads(pickle.dumps(A()))).__module__)",
    "import multiprocessing as mp\n\ndef sq(x):\n    return x * x\n\nif __name__ == '__main__':\n"
    "    with mp.Pool(2) as p:\n        print(p.map(sq, range(5)))",
]


@pytest.mark.parametrize("code", SEMANTICS_PROBES)
def test_warm_python_behaves_like_a_fresh_interpreter(code, sandbox_server, cold_server):
    """The pre-started interpreter must be indistinguishable from `python3 main.py`."""
    payload = {"code": code, "language": "python", "stdin": "abc\ndef\n"}
    warm = httpx.post(f"{sandbox_server.url}/run_code", json=payload, timeout=60).json()["run_result"]
    cold = httpx.post(f"{cold_server.url}/run_code", json=payload, timeout=60).json()["run_result"]
    assert (warm["return_code"], warm["stdout"], warm["stderr"]) == \
        (cold["return_code"], cold["stdout"], cold["stderr"])


@pytest.fixture(scope="module")
def cold_server():
    server = start_server("--warm-pool-size", "0")
    yield server
    stop_server(server)


def test_unreachable_work_root_is_refused_clearly(tmp_path):
    # pytest's tmp dirs are 0700: the sandbox uid could not enter a work dir below them.
    with pytest.raises(RuntimeError, match="not reachable by the sandbox uid"):
        start_server("--work-root", str(tmp_path / "runs"), timeout=30)


def test_work_dirs_are_removed_on_shutdown_and_stale_ones_at_start():
    work_root = Path(tempfile.mkdtemp(prefix="agentgym-sandbox-test-", dir="/dev/shm"))
    os.chmod(work_root, 0o711)
    stale = work_root / "server-999999999" / "run-leftover"
    stale.mkdir(parents=True)
    server = start_server("--work-root", str(work_root))
    try:
        assert not stale.parent.exists()
        resp = sf.run_code(_req("print('x')"), endpoint=server.url, max_attempts=1)
        assert resp.status == sf.RunStatus.Success
        assert [p.name for p in work_root.iterdir()] == [f"server-{server.proc.pid}"]
    finally:
        stop_server(server)
    assert list(work_root.iterdir()) == []
    work_root.rmdir()
