"""The tool against a loopback server that fails on purpose: what is retried, what is not, and what the model sees."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentgym.tools.sandbox_fusion import SandboxFusionTool


def make_tool(server, **overrides) -> SandboxFusionTool:
    config = {
        "sandbox_fusion_url": f"{server.url}/run_code",
        "enable_global_rate_limit": False,
        "rate_limit": 1000,
        "num_workers": 64,
        "retry_initial_backoff": 0.01,
        "retry_max_backoff": 0.05,
        **overrides,
    }
    return SandboxFusionTool(config, None)


async def call(tool, code, **params):
    iid, _ = await tool.create()
    try:
        return await tool.execute(iid, {"code": code, **params})
    finally:
        await tool.release(iid)


async def test_success_reaches_the_model_with_exit_code(fault_server):
    tool = make_tool(fault_server)
    resp, reward, m = await call(tool, "# fault: ok\nhello")
    assert resp.text == "Exit code: 0\n--- stdout ---\nhello"
    assert reward == 0.0
    assert m["outcome"] == "success" and m["attempts"] == 1 and m["retries"] == 0
    assert m["http_status"] == 200 and m["latency_s"] >= m["queue_wait_s"] >= 0


async def test_base_url_and_run_code_url_both_work(fault_server):
    for url in (fault_server.url, fault_server.url + "/", fault_server.url + "/run_code"):
        tool = make_tool(fault_server, sandbox_fusion_url=url)
        resp, _, m = await call(tool, "# fault: ok\nx")
        assert m["outcome"] == "success", resp.text


async def test_user_code_failure_is_an_answer_not_retried(fault_server):
    tool = make_tool(fault_server)
    code = "# fault: exit 3\npartial"
    resp, _, m = await call(tool, code)
    assert m["outcome"] == "runtime_error" and m["attempts"] == 1
    assert fault_server.count(code) == 1
    assert resp.text.startswith("Exit code: 3\n")
    assert "--- stderr ---\nboom" in resp.text


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_overload_and_gateway_statuses_are_retried(fault_server, status):
    tool = make_tool(fault_server)
    code = f"# fault: status {status} x2\nrecovered"
    resp, _, m = await call(tool, code)
    assert m["outcome"] == "success" and m["attempts"] == 3 and m["retries"] == 2
    assert fault_server.count(code) == 3
    assert "recovered" in resp.text


async def test_persistent_gateway_error_gives_up_after_max_retries_with_plain_error(fault_server):
    tool = make_tool(fault_server, max_retries=2)
    code = "# fault: status 502"
    resp, reward, m = await call(tool, code)
    assert fault_server.count(code) == 3
    assert m["outcome"] == "unavailable" and m["attempts"] == 3 and m["infrastructure_failure"]
    assert reward == 0.0
    assert resp.text.startswith("Sandbox error: the code could not be run")
    assert "HTTP 502" in resp.text and "not of the code" in resp.text


async def test_persistent_overload_is_retried_until_the_deadline_not_max_retries(fault_server):
    tool = make_tool(fault_server, max_retries=2, deadline=1.0)
    code = "# fault: status 503"
    resp, _, m = await call(tool, code)
    assert m["outcome"] == "deadline_exceeded" and m["attempts"] > 3
    assert 0.5 <= m["latency_s"] < 1.6
    assert "HTTP 503 (overloaded)" in resp.text and "deadline of 1 s" in resp.text


async def test_retry_after_header_is_honoured(fault_server):
    tool = make_tool(fault_server)
    code = "# fault: status 503 retry-after 0.4 x1\nlater"
    _, _, m = await call(tool, code)
    assert m["outcome"] == "success" and m["attempts"] == 2
    assert m["latency_s"] >= 0.4


@pytest.mark.parametrize("status,outcome", [(400, "rejected"), (422, "rejected"), (500, "sandbox_error")])
async def test_other_http_errors_are_not_retried(fault_server, status, outcome):
    tool = make_tool(fault_server)
    code = f"# fault: status {status}"
    resp, _, m = await call(tool, code)
    assert m["outcome"] == outcome and m["attempts"] == 1
    assert fault_server.count(code) == 1
    assert f"HTTP {status}" in resp.text


async def test_connection_reset_is_retried(fault_server):
    tool = make_tool(fault_server)
    code = "# fault: reset x1\nagain"
    resp, _, m = await call(tool, code)
    assert m["outcome"] == "success" and m["attempts"] == 2, resp.text
    assert "again" in resp.text


async def test_connection_refused_is_retried_then_reported(fault_server):
    port = fault_server.port
    fault_server.stop()
    tool = make_tool(fault_server, max_retries=2, sandbox_fusion_url=f"http://127.0.0.1:{port}")
    resp, _, m = await call(tool, "print(1)")
    assert m["outcome"] == "unavailable" and m["attempts"] == 3
    assert "could not reach the sandbox" in resp.text


async def test_sandbox_error_is_retried(fault_server):
    tool = make_tool(fault_server)
    code = "# fault: sandbox_error x2\nfine"
    resp, _, m = await call(tool, code)
    assert m["outcome"] == "success" and m["attempts"] == 3
    always = "# fault: sandbox_error"
    resp, _, m = await call(tool, always)
    assert m["outcome"] == "sandbox_error" and m["attempts"] == 4
    assert "executor crashed" in resp.text


@pytest.mark.parametrize("fault", ["malformed", "wrongshape"])
async def test_malformed_answer_is_reported_not_retried(fault_server, fault):
    tool = make_tool(fault_server)
    code = f"# fault: {fault}"
    resp, _, m = await call(tool, code)
    assert m["outcome"] == "bad_response" and m["attempts"] == 1
    assert fault_server.count(code) == 1
    assert "not Sandbox Fusion JSON" in resp.text


async def test_slow_server_is_cut_by_the_deadline(fault_server):
    # request timeout = 0.3 + 0.3 + 0.2 = 0.8 s; deadline 1.5 s: one full try, then one cut short.
    tool = make_tool(fault_server, default_timeout=0.3, request_timeout_margin=0.2, deadline=1.5, max_retries=10)
    code = "# fault: slow 5"
    resp, _, m = await call(tool, code)
    assert m["outcome"] == "deadline_exceeded"
    assert 1.5 <= m["latency_s"] < 2.0
    assert m["attempts"] >= 2
    assert "deadline of 1.5 s" in resp.text


async def test_one_failing_call_does_not_disturb_the_others(fault_server):
    tool = make_tool(fault_server, max_retries=1)
    codes = [f"# fault: ok\nn{i}" for i in range(30)]
    codes[7] = "# fault: malformed"
    codes[11] = "# fault: reset"
    codes[19] = "# fault: status 502"
    results = await asyncio.gather(*(call(tool, c) for c in codes))
    outcomes = [m["outcome"] for _, _, m in results]
    assert outcomes[7] == "bad_response" and outcomes[11] == "unavailable" and outcomes[19] == "unavailable"
    for i, (resp, _, m) in enumerate(results):
        if i not in (7, 11, 19):
            assert m["outcome"] == "success" and f"n{i}" in resp.text


async def test_num_workers_bounds_requests_in_flight(fault_server):
    tool = make_tool(fault_server, num_workers=3)
    await asyncio.gather(*(call(tool, f"# fault: hold 0.1\n{i}") for i in range(15)))
    assert fault_server.max_in_flight == 3


async def test_missing_code_is_told_to_the_model_without_a_request(fault_server):
    tool = make_tool(fault_server)
    for params in ({}, {"code": "   "}):
        iid, _ = await tool.create()
        resp, _, m = await tool.execute(iid, params)
        assert m["outcome"] == "invalid_arguments" and m["attempts"] == 0
        assert "`code`" in resp.text
    assert fault_server.requests == []


async def test_request_carries_config_and_call_settings(fault_server):
    tool = make_tool(fault_server, default_timeout=7, max_timeout=20, memory_limit_mb=256, default_language="bash")
    await call(tool, "# fault: ok\n1")
    await call(tool, "# fault: ok\n2", language="python", timeout=100)
    iid, _ = await tool.create()
    await tool.execute(iid, {"code": "# fault: ok\n3"}, stdin="in", timeout=12)
    first, second, third = fault_server.requests
    assert (first["language"], first["run_timeout"], first["compile_timeout"], first["memory_limit_MB"]) == (
        "bash", 7, 7, 256,
    )
    assert (second["language"], second["run_timeout"]) == ("python", 20)
    assert (third["stdin"], third["run_timeout"]) == ("in", 12)


async def test_cancelled_call_propagates_and_frees_its_slot(fault_server):
    tool = make_tool(fault_server, num_workers=1)
    task = asyncio.create_task(call(tool, "# fault: slow 5"))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    resp, _, m = await asyncio.wait_for(call(tool, "# fault: ok\nnext"), 3)
    assert m["outcome"] == "success"
    assert tool.metrics_summary()["outcomes"] == {"cancelled": 1, "success": 1}, "every call is counted"


async def test_metrics_summary_aggregates_calls(fault_server):
    tool = make_tool(fault_server, max_retries=1)
    await call(tool, "# fault: ok\n1")
    await call(tool, "# fault: status 503 x1\n2")
    await call(tool, "# fault: exit 1")
    await call(tool, "# fault: malformed")
    s = tool.metrics_summary()
    assert s["calls"] == 4 and s["retries"] == 1
    assert s["outcomes"] == {"success": 2, "runtime_error": 1, "bad_response": 1}
    assert s["infrastructure_failures"] == 1
    assert 0 < s["latency_s_p50"] <= s["latency_s_p99"]
    assert tool.metrics_summary(reset=True)["calls"] == 4
    assert tool.metrics_summary()["calls"] == 0


async def test_rate_limit_paces_calls(fault_server):
    tool = make_tool(fault_server, rate_limit=20, burst=1)
    start = time.monotonic()
    results = await asyncio.gather(*(call(tool, f"# fault: ok\n{i}") for i in range(11)))
    # 1 token at once, then one every 50 ms: the 11th starts 0.5 s in.
    assert time.monotonic() - start >= 0.5
    waits = sorted(m["queue_wait_s"] for _, _, m in results)
    assert waits[0] < 0.05 and waits[-1] >= 0.45


async def test_global_rate_limit_goes_through_ray(fault_server, ray_local):
    tool = make_tool(
        fault_server, enable_global_rate_limit=True, rate_limit=20, burst=1,
        global_rate_limiter_name=f"test-tool-{fault_server.port}",
    )
    start = time.monotonic()
    results = await asyncio.gather(*(call(tool, f"# fault: ok\n{i}") for i in range(6)))
    assert all(m["outcome"] == "success" for _, _, m in results)
    assert time.monotonic() - start >= 0.25
    from agentgym.tools.rate_limit import global_limiter_actor_name

    assert ray_local.get_actor(global_limiter_actor_name(f"test-tool-{fault_server.port}")) is not None


_NO_RAY_CHILD = """
import asyncio, logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s")
from agentgym.tools.sandbox_fusion import SandboxFusionTool, aclose_http_sessions

async def main():
    tool = SandboxFusionTool({"sandbox_fusion_url": sys.argv[1], "rate_limit": 100}, None)
    iid, _ = await tool.create()
    for _ in range(2):
        resp, _, m = await tool.execute(iid, {"code": "# fault: ok\\nfine"})
        print("OUTCOME", m["outcome"])
    await aclose_http_sessions()

asyncio.run(main())
"""


def test_global_rate_limit_without_ray_falls_back_to_the_process_bucket_and_says_so(fault_server):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _NO_RAY_CHILD, fault_server.url], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("OUTCOME success") == 2
    assert out.stdout.count("this process is not connected to Ray") == 1


async def test_lone_surrogate_in_code_is_the_models_error_told_without_a_request(fault_server):
    import json

    tool = make_tool(fault_server)
    code = json.loads('"print(\\"\\ud800\\")"')  # what the model's tool-call JSON decodes to
    resp, _, m = await call(tool, code)
    assert m["outcome"] == "invalid_arguments" and not m["infrastructure_failure"]
    assert "\\ud800" in resp.text and "character 7" in resp.text
    resp.text.encode("utf-8")  # the model's next prompt must be real text
    assert fault_server.requests == []


async def test_time_queued_in_the_client_does_not_count_against_the_session_bound(fault_server):
    from types import SimpleNamespace

    from agentgym.episode.session import Session, SessionConfig

    tool = make_tool(fault_server, rate_limit=10, burst=1)  # the 8th call starts 0.7 s in
    calls = [SimpleNamespace(name="code_interpreter", arguments={"code": f"# fault: ok\n{i}"}, id=str(i))
             for i in range(8)]
    async with Session({"code_interpreter": tool}, config=SessionConfig(tool_call_timeout=0.3)) as session:
        results = await session.run_calls(calls)
    assert [r.error for r in results] == [None] * 8
    assert max(r.metrics["queue_wait_s"] for r in results) >= 0.6
    assert tool.metrics_summary()["outcomes"] == {"success": 8}


async def test_queue_bound_is_separate_reported_and_configurable(fault_server):
    tool = make_tool(fault_server, rate_limit=2, burst=1, queue_timeout=0.3)  # 2nd token after 0.5 s
    results = await asyncio.gather(*(call(tool, f"# fault: ok\n{i}") for i in range(3)))
    outcomes = sorted(m["outcome"] for _, _, m in results)
    assert outcomes == ["queue_timeout", "queue_timeout", "success"]
    resp, _, m = next(r for r in results if r[2]["outcome"] == "queue_timeout")
    assert m["attempts"] == 0 and m["infrastructure_failure"]
    assert "queue_timeout" in resp.text and "was not sent" in resp.text
    assert len(fault_server.requests) == 1
    summary = tool.metrics_summary()
    assert summary["calls"] == 3 and summary["infrastructure_failures"] == 2
