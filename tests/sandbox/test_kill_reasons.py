"""Every limit the sandbox enforces says so in fields Sandbox Fusion clients read (stderr, message),
while the statuses stay SF's own."""

from __future__ import annotations

import sandbox_fusion.models as sf

NOTE = "[sandbox] "


def _check_sf(out: dict) -> None:
    """The answer still parses with the public client's (strict) models."""
    sf.RunCodeResponse.parse_obj(out)


def test_truncated_output_says_so(run):
    out = run(code="import sys\nsys.stdout.write('x' * ((1 << 20) + 1))")
    _check_sf(out)
    rr = out["run_result"]
    assert out["status"] == "Success" and rr["return_code"] == 0
    assert rr["output_truncated"] is True and rr["killed_by"] is None
    assert len(rr["stdout"]) == 1 << 20
    assert "output truncated at 1048576 bytes" in out["message"]
    assert rr["stderr"] == f"{NOTE}output truncated at 1048576 bytes per stream\n"


def test_memory_kill_says_so(run):
    out = run(code="x = bytearray(2 * 1024 ** 3)\nprint('allocated')", memory_limit_MB=256)
    _check_sf(out)
    rr = out["run_result"]
    assert out["status"] == "Failed" and rr["return_code"] == 137
    assert rr["killed_by"] == "memory" and rr["memory_limit_exceeded"] is True
    assert "killed: memory limit 256 MB exceeded" in out["message"]
    assert f"{NOTE}killed: memory limit 256 MB exceeded" in rr["stderr"]


def test_output_volume_kill_says_so(run):
    code = "import sys\nchunk = 'y' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)"
    out = run(code=code, run_timeout=30)
    _check_sf(out)
    rr = out["run_result"]
    assert out["status"] == "Failed" and rr["status"] == "Finished"
    assert rr["killed_by"] == "output_limit" and rr["memory_limit_exceeded"] is False
    assert rr["output_truncated"] is True
    assert out["message"].startswith("killed: output limit (more than 67108864 bytes")
    assert f"{NOTE}killed: output limit" in rr["stderr"]


def test_timeout_says_so(run):
    out = run(code="import time\nprint('started', flush=True)\ntime.sleep(30)", run_timeout=1.5)
    _check_sf(out)
    rr = out["run_result"]
    assert out["status"] == "Failed" and rr["status"] == "TimeLimitExceeded" and rr["return_code"] is None
    assert rr["killed_by"] == "timeout" and rr["stdout"] == "started\n"
    assert out["message"] == "killed: wall-clock timeout of 1.5 s exceeded"
    assert rr["stderr"] == f"{NOTE}killed: wall-clock timeout of 1.5 s exceeded\n"


def test_pids_limit_says_so(run):
    code = ("import os\ntry:\n    while True:\n        if os.fork() == 0:\n            import time; time.sleep(60)\n"
            "except OSError:\n    print('fork refused')\n")
    out = run(code=code, run_timeout=10)
    _check_sf(out)
    rr = out["run_result"]
    assert rr["stdout"] == "fork refused\n" and rr["pids_limit_reached"] is True
    assert "process limit reached: 256 processes/threads per run" in out["message"]
    assert f"{NOTE}process limit reached" in rr["stderr"]


def test_cpu_time_kill_says_so(run):
    out = run(code="ulimit -S -t 1\nexec python3 -c 'while True: pass'", language="bash", run_timeout=10)
    _check_sf(out)
    rr = out["run_result"]
    assert out["status"] == "Failed" and rr["return_code"] == 152
    assert rr["killed_by"] == "cpu_time"
    assert "killed: CPU time limit exceeded (SIGXCPU" in out["message"]


def test_clean_run_has_no_notes(run):
    out = run(code="import sys\nprint('hi')\nprint('warn', file=sys.stderr)")
    rr = out["run_result"]
    assert out["message"] == "" and rr["stderr"] == "warn\n" and rr["killed_by"] is None
    assert rr["pids_limit_reached"] is False
