"""What the model reads for each kind of sandbox answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agentgym.tools.sandbox_fusion.metrics import Outcome
from agentgym.tools.sandbox_fusion.output import Limits, classify, render_failure, render_response, truncate_middle
from agentgym.tools.sandbox_fusion.wire import RunCodeResponse

LIMITS = Limits(run_timeout=5, compile_timeout=7, memory_limit_mb=256, max_output_chars=100)


def answer(status="Success", run=None, compile_=None, **extra) -> RunCodeResponse:
    return RunCodeResponse.model_validate(
        {"status": status, "message": "", "run_result": run, "compile_result": compile_, **extra}
    )


def finished(rc=0, stdout="", stderr="", **extra):
    return {"status": "Finished", "return_code": rc, "stdout": stdout, "stderr": stderr, "execution_time": 0.1, **extra}


@given(st.text(), st.integers(min_value=10, max_value=300))
def test_truncation_keeps_head_and_tail_and_counts_the_cut(text, limit):
    shown, cut = truncate_middle(text, limit)
    if len(text) <= limit:
        assert (shown, cut) == (text, False)
    else:
        head, tail = limit // 2, limit - limit // 2
        assert cut and shown.startswith(text[:head]) and shown.endswith(text[-tail:])
        assert f"[... {len(text) - limit} characters truncated ...]" in shown


def test_success_without_output_says_so():
    r = render_response(answer(run=finished()), LIMITS)
    assert (r.text, r.outcome, r.truncated) == ("Exit code: 0\n(no output)", Outcome.SUCCESS, False)


def test_nonzero_exit_shows_both_streams():
    r = render_response(answer("Failed", run=finished(2, "out\n", "err")), LIMITS)
    assert r.text == "Exit code: 2\n--- stdout ---\nout\n--- stderr ---\nerr"
    assert r.outcome is Outcome.RUNTIME_ERROR


def test_long_streams_are_cut_each_to_the_limit():
    r = render_response(answer(run=finished(0, "o" * 500, "e" * 150)), LIMITS)
    assert r.truncated
    assert "[... 400 characters truncated ...]" in r.text and "[... 50 characters truncated ...]" in r.text


def test_server_side_cut_is_mentioned():
    r = render_response(answer(run=finished(0, "partial", output_truncated=True)), LIMITS)
    assert r.text.endswith("[the sandbox cut the output at its size limit]")


def test_run_timeout_is_stated_with_the_limit():
    r = render_response(answer("Failed", run={"status": "TimeLimitExceeded", "stdout": "tick\n"}), LIMITS)
    assert r.text == "Time limit exceeded: the program was still running after 5 s and was stopped.\n--- stdout ---\ntick"
    assert r.outcome is Outcome.TIMEOUT


def test_memory_limit_is_stated_with_the_limit():
    r = render_response(answer("Failed", run=finished(137, memory_limit_exceeded=True)), LIMITS)
    assert r.text == "Memory limit exceeded: the program used more than 256 MB and was stopped."
    assert r.outcome is Outcome.MEMORY_LIMIT


def test_compile_failure_shows_compiler_output_and_says_nothing_ran():
    r = render_response(answer("Failed", compile_=finished(1, "", "main.cpp:1: error: expected ';'")), LIMITS)
    assert r.text == (
        "Compilation failed (exit code 1). The program did not run.\n"
        "--- compiler stderr ---\nmain.cpp:1: error: expected ';'"
    )
    assert r.outcome is Outcome.COMPILE_ERROR


def test_compile_timeout_is_stated_with_its_limit():
    r = render_response(answer("Failed", compile_={"status": "TimeLimitExceeded"}), LIMITS)
    assert r.text == "Compilation timed out: it was stopped after 7 s. The program did not run."
    assert classify(answer("Failed", compile_={"status": "TimeLimitExceeded"})) is Outcome.COMPILE_TIMEOUT


def test_compiled_then_run_reports_the_run():
    r = render_response(answer(compile_=finished(0), run=finished(0, "42\n")), LIMITS)
    assert r.text == "Exit code: 0\n--- stdout ---\n42"


def test_failures_say_whose_fault_it_is():
    infra = render_failure(Outcome.UNAVAILABLE, "HTTP 503")
    assert infra.text == (
        "Sandbox error: the code could not be run (HTTP 503). This is a problem of the code sandbox, not of the code."
    )
    refused = render_failure(Outcome.REJECTED, "HTTP 422: language 'x' is not available")
    assert refused.text == "The sandbox refused to run the code (HTTP 422: language 'x' is not available)."
    assert Outcome.UNAVAILABLE.is_infrastructure_failure and not Outcome.REJECTED.is_infrastructure_failure


def test_call_metrics_dict_has_every_field():
    from dataclasses import fields

    from agentgym.tools.sandbox_fusion.metrics import CallMetrics

    m = CallMetrics(outcome=Outcome.TIMEOUT, latency_s=1.5, queue_wait_s=0.25, attempts=3, language="bash")
    d = m.as_dict()
    assert {f.name for f in fields(CallMetrics)} <= set(d)
    assert d["outcome"] == "timeout" and d["retries"] == 2 and d["infrastructure_failure"] is False
