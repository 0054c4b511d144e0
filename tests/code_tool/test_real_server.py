"""The tool against the real sandbox server (a child process, isolation on): answers, limits, overload, crashes."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.tools.sandbox_fusion import SandboxFusionTool

from .sandbox_process import SandboxProcess


def make_tool(url: str, **overrides) -> SandboxFusionTool:
    config = {
        "sandbox_fusion_url": url,
        "enable_global_rate_limit": False,
        "rate_limit": 500,
        "num_workers": 32,
        "default_timeout": 10,
        "retry_initial_backoff": 0.05,
        "retry_max_backoff": 0.5,
        **overrides,
    }
    return SandboxFusionTool(config, None)


async def run(tool, code, kwargs=None, **params):
    iid, _ = await tool.create()
    try:
        return await tool.execute(iid, {"code": code, **params}, **(kwargs or {}))
    finally:
        await tool.release(iid)


async def test_python_output_and_exit_code(sandbox):
    tool = make_tool(sandbox.url)
    resp, reward, m = await run(tool, "import sys\nprint('hello')\nprint('warn', file=sys.stderr)")
    assert resp.text == "Exit code: 0\n--- stdout ---\nhello\n--- stderr ---\nwarn"
    assert (reward, m["outcome"], m["attempts"]) == (0.0, "success", 1)
    assert m["execution_time_s"] > 0
    # The sandbox's own account of the call: which server, its exit status, CPU time, nothing killed.
    assert m["server"] == sandbox.url + "/run_code" and m["return_code"] == 0 and m["kill_reason"] is None
    assert m["cpu_time_s"] is not None and 0 < m["cpu_time_s"] < 10 and m["queue_wait_s"] >= 0


async def test_bash_and_stdin(sandbox):
    tool = make_tool(sandbox.url)
    resp, _, m = await run(tool, "read x; echo got $x; exit 4", kwargs={"stdin": "abc\n"}, language="bash")
    assert resp.text == "Exit code: 4\n--- stdout ---\ngot abc"
    assert m["outcome"] == "runtime_error" and m["attempts"] == 1


async def test_exception_shows_traceback_and_is_not_retried(sandbox):
    tool = make_tool(sandbox.url)
    resp, _, m = await run(tool, "raise ValueError('bad input 42')")
    assert resp.text.startswith("Exit code: 1\n--- stderr ---\nTraceback")
    assert "ValueError: bad input 42" in resp.text
    assert m["outcome"] == "runtime_error" and m["attempts"] == 1


async def test_time_limit_is_stated(sandbox):
    tool = make_tool(sandbox.url, default_timeout=1)
    resp, _, m = await run(tool, "print('started', flush=True)\nwhile True: pass")
    assert resp.text.startswith("Time limit exceeded: the program was still running after 1 s and was stopped.")
    assert "started" in resp.text
    assert m["outcome"] == "timeout" and m["attempts"] == 1
    assert m["kill_reason"] == "timeout"


async def test_memory_limit_is_stated(sandbox):
    tool = make_tool(sandbox.url, memory_limit_mb=64)
    resp, _, m = await run(tool, "x = bytearray(400 * 1024 * 1024)\nprint(len(x))")
    assert resp.text.startswith("Memory limit exceeded: the program used more than 64 MB and was stopped.")
    assert m["outcome"] == "memory_limit"
    assert m["kill_reason"] == "memory"


async def test_long_output_is_cut_with_a_marker(sandbox):
    tool = make_tool(sandbox.url, max_output_chars=1000)
    resp, _, m = await run(tool, "print('A' * 50000)\nprint('THE END')")
    stdout_len = 50000 + len("\nTHE END\n")
    assert f"[... {stdout_len - 1000} characters truncated ...]" in resp.text
    assert resp.text.startswith("Exit code: 0\n--- stdout ---\n" + "A" * 500)
    assert resp.text.endswith("THE END")
    assert m["output_truncated"] is True
    assert m["kill_reason"] is None  # cut by the tool for the model, not by the sandbox


async def test_output_past_the_servers_cap_is_a_kill_the_metrics_name(sandbox):
    tool = make_tool(sandbox.url)
    _, _, m = await run(tool, "import sys\nwhile True: sys.stdout.write('x' * (1 << 20))")
    assert m["kill_reason"] == "output_limit" and m["output_truncated"] is True


async def test_unknown_language_is_refused_with_the_servers_reason(sandbox):
    tool = make_tool(sandbox.url)
    resp, _, m = await run(tool, "DISPLAY 'HI'.", language="cobol")
    assert m["outcome"] == "rejected" and m["attempts"] == 1 and not m["infrastructure_failure"]
    assert "language 'cobol' is not available" in resp.text and "python" in resp.text


async def test_many_concurrent_calls(sandbox):
    tool = make_tool(sandbox.url, num_workers=16)
    results = await asyncio.gather(*(run(tool, f"print({i} * {i})") for i in range(48)))
    for i, (resp, _, m) in enumerate(results):
        assert m["outcome"] == "success", resp.text
        assert resp.text == f"Exit code: 0\n--- stdout ---\n{i * i}"


async def test_verl_tool_yaml_loads_our_class_and_runs(sandbox, tmp_path):
    # verl's example YAML for this tool, with the URL of our server (its /run_code endpoint, as verl writes it).
    path = tmp_path / "sandbox_fusion_tool_config.yaml"
    path.write_text(textwrap.dedent(f"""\
        tools:
          - class_name: "verl.tools.sandbox_fusion_tools.SandboxFusionTool"
            config: {{
              "sandbox_fusion_url": "{sandbox.url}/run_code"
            }}
            tool_schema:
              type: "function"
              function:
                name: "code_interpreter"
                description: "A tool for executing code."
                parameters:
                  type: "object"
                  properties:
                    code:
                      type: "string"
                      description: "The code to execute."
                  required: ["code"]
        """))
    tools = build_tools(load_tool_specs(path))
    tool = tools["code_interpreter"]
    assert isinstance(tool, SandboxFusionTool)
    # verl's class path shows the model what verl's tool shows it: the raw streams, or verl's fixed line.
    resp, _, m = await run(tool, "print(6 * 7)")
    assert resp.text == "42\n" and m["outcome"] == "success"
    resp, _, m = await run(tool, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert resp.text == "out\nerr\n" and m["outcome"] == "runtime_error"
    resp, _, m = await run(tool, "import time\ntime.sleep(30)", timeout=1)
    assert resp.text == "no stdout here" and m["outcome"] == "timeout"
    ours = SandboxFusionTool({"sandbox_fusion_url": f"{sandbox.url}/run_code", "output_format": "agentgym"})
    resp, _, _ = await run(ours, "print(6 * 7)")
    assert resp.text == "Exit code: 0\n--- stdout ---\n42"


@pytest.fixture
def small_sandbox():
    """A server that runs one program at a time and queues none: a request arriving during a run gets 503.

    The tests pace requests (rate 20/s, burst 1): the server's admission check lets requests that arrive in the
    same event-loop tick all queue, so simultaneous arrivals would not show the overload path."""
    server = SandboxProcess("--max-concurrency", "1", "--max-queue", "0").start()
    yield server
    server.stop()


async def test_overload_503_is_retried_until_served(small_sandbox):
    tool = make_tool(
        small_sandbox.url, rate_limit=20, burst=1, max_retries=30, retry_initial_backoff=0.05, retry_max_backoff=0.3
    )
    results = await asyncio.gather(*(run(tool, f"import time; time.sleep(0.2); print({i})") for i in range(5)))
    for i, (resp, _, m) in enumerate(results):
        assert m["outcome"] == "success", resp.text
        assert resp.text.endswith(f"\n{i}")
    retried = [m for _, _, m in results if m["retries"] > 0]
    assert retried, "five concurrent calls to a one-slot server with no queue: some must have met 503"
    assert tool.metrics_summary()["retries"] == sum(m["retries"] for _, _, m in results)


async def test_overload_past_the_deadline_is_reported_with_its_cause(small_sandbox):
    tool = make_tool(small_sandbox.url, rate_limit=20, burst=1, max_retries=0, deadline=1.0)
    results = await asyncio.gather(*(run(tool, "import time; time.sleep(0.3)") for _ in range(3)))
    outcomes = sorted(m["outcome"] for _, _, m in results)
    assert outcomes.count("success") >= 1 and "deadline_exceeded" in outcomes
    busy = next(resp for resp, _, m in results if m["outcome"] == "deadline_exceeded")
    assert "HTTP 503" in busy.text


async def test_a_crowd_on_a_full_server_is_served_within_the_deadline_not_dropped(small_sandbox):
    """verl-like backoff (0.5-8 s), one retry allowed for other failures: overload answers are retried until the
    deadline, so a crowd far larger than the server's capacity is served, late, instead of failing after 2 tries."""
    tool = make_tool(small_sandbox.url, rate_limit=1000, num_workers=64, max_retries=1,
                     retry_initial_backoff=0.5, retry_max_backoff=8.0, deadline=60)
    results = await asyncio.gather(*(run(tool, f"print({i})") for i in range(24)))
    failed = [resp.text for resp, _, m in results if m["outcome"] != "success"]
    assert not failed, failed[:2]
    summary = tool.metrics_summary()
    assert summary["calls"] == 24 and summary["retries"] > 12, "the one-slot server must have turned calls away"
    assert max(m["attempts"] for _, _, m in results) > 2, "overload was retried past max_retries"


async def test_overloaded_server_says_when_to_come_back(small_sandbox):
    import aiohttp

    body = {"code": "import time; time.sleep(2)", "language": "python", "run_timeout": 10}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{small_sandbox.url}/run_code", json=body) as resp:  # teaches it a run takes ~2 s
            assert resp.status == 200
        running = asyncio.create_task(http.post(f"{small_sandbox.url}/run_code", json=body))
        await asyncio.sleep(0.5)
        async with http.post(f"{small_sandbox.url}/run_code", json={**body, "code": "print(1)"}) as resp:
            assert resp.status == 503
            assert int(resp.headers["Retry-After"]) >= 2
        (await running).release()


@pytest.fixture
def own_sandbox():
    server = SandboxProcess().start()
    yield server
    server.stop()


async def test_server_killed_mid_run_then_restarted_call_succeeds_by_retry(own_sandbox):
    tool = make_tool(own_sandbox.url, max_retries=20, retry_initial_backoff=0.2, retry_max_backoff=1.0, deadline=60)
    call = asyncio.create_task(run(tool, "import time; time.sleep(1.5); print('done')"))
    await asyncio.sleep(0.7)  # the run is under way
    own_sandbox.kill()
    await asyncio.sleep(0.5)
    await asyncio.to_thread(own_sandbox.start)  # same port
    resp, _, m = await call
    assert m["outcome"] == "success" and m["attempts"] >= 2, resp.text
    assert resp.text.endswith("done")


async def test_server_killed_for_good_gives_an_error_not_an_exception(own_sandbox):
    tool = make_tool(own_sandbox.url, max_retries=2, retry_initial_backoff=0.05, deadline=10)
    resp, _, m = await run(tool, "print('warm up the pooled connection')")
    assert m["outcome"] == "success"
    call = asyncio.create_task(run(tool, "import time; time.sleep(2)"))
    await asyncio.sleep(0.5)
    own_sandbox.kill()
    resp, reward, m = await call
    assert m["outcome"] == "unavailable" and m["attempts"] == 3 and reward == 0.0
    assert resp.text.startswith("Sandbox error: the code could not be run")


async def test_restart_between_calls_is_transparent(own_sandbox):
    tool = make_tool(own_sandbox.url, max_retries=3)
    for round_ in range(3):
        results = await asyncio.gather(*(run(tool, f"print({round_})") for _ in range(8)))
        assert all(m["outcome"] == "success" for _, _, m in results)
        own_sandbox.stop()
        await asyncio.to_thread(own_sandbox.start)
