"""What the model reads after a code call: the outcome in plain words, then stdout/stderr, long streams cut visibly.

The model learns from this text, so it states the exit code, time and memory limits, and who failed (its code or the
sandbox) in so many words, and it never hides that output was cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from agentgym.tools.sandbox_fusion.metrics import Outcome
from agentgym.tools.sandbox_fusion.wire import CommandRunResult, RunCasesResponse, RunCodeResponse


@dataclass(frozen=True)
class Limits:
    run_timeout: float
    compile_timeout: float
    memory_limit_mb: int
    max_output_chars: int


@dataclass(frozen=True)
class Rendered:
    text: str
    outcome: Outcome
    truncated: bool


def truncate_middle(text: str, limit: int) -> tuple[str, bool]:
    """Keep the head and the tail (a traceback's last lines matter most), with a marker saying how much went."""
    if len(text) <= limit:
        return text, False
    head = limit // 2
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters truncated ...]\n{text[-tail:]}", True


def _is_memory_limit(result: CommandRunResult) -> bool:
    return bool(result.memory_limit_exceeded) or "memory" in result.status.lower()


def _was_cut_by_server(response: RunCodeResponse, result: Optional[CommandRunResult]) -> bool:
    return bool(response.output_truncated) or bool(result is not None and result.output_truncated)


def classify(response: RunCodeResponse) -> Outcome:
    compile_ = response.compile_result
    if compile_ is not None and (compile_.status != "Finished" or (compile_.return_code or 0) != 0):
        if compile_.status == "TimeLimitExceeded":
            return Outcome.COMPILE_TIMEOUT
        if _is_memory_limit(compile_):
            return Outcome.MEMORY_LIMIT
        return Outcome.COMPILE_ERROR
    run = response.run_result
    if run is None:
        return Outcome.SUCCESS if response.status == "Success" else Outcome.RUNTIME_ERROR
    if run.status == "TimeLimitExceeded":
        return Outcome.TIMEOUT
    if _is_memory_limit(run):
        return Outcome.MEMORY_LIMIT
    if run.status == "Finished" and run.return_code == 0 and response.status == "Success":
        return Outcome.SUCCESS
    return Outcome.RUNTIME_ERROR


def _streams(result: CommandRunResult, limit: int, *, stdout_label: str = "stdout", stderr_label: str = "stderr"):
    parts: list[str] = []
    truncated = False
    for label, text in ((stdout_label, result.stdout), (stderr_label, result.stderr)):
        if text:
            shown, cut = truncate_middle(text, limit)
            truncated |= cut
            parts.append(f"--- {label} ---\n{shown}" + ("" if shown.endswith("\n") else "\n"))
    return parts, truncated


def _seconds(x: float) -> str:
    return f"{x:g} s"


def render_response(response: RunCodeResponse, limits: Limits) -> Rendered:
    outcome = classify(response)
    lines: list[str] = []
    shown_result: Optional[CommandRunResult] = None
    if outcome in (Outcome.COMPILE_ERROR, Outcome.COMPILE_TIMEOUT) or (
        outcome is Outcome.MEMORY_LIMIT and response.run_result is None
    ):
        c = response.compile_result
        assert c is not None
        if outcome is Outcome.COMPILE_TIMEOUT:
            lines.append(
                f"Compilation timed out: it was stopped after {_seconds(limits.compile_timeout)}. "
                "The program did not run."
            )
        elif outcome is Outcome.MEMORY_LIMIT:
            lines.append(
                f"Compilation exceeded the memory limit of {limits.memory_limit_mb} MB and was stopped. "
                "The program did not run."
            )
        else:
            code = f" (exit code {c.return_code})" if c.return_code is not None else ""
            lines.append(f"Compilation failed{code}. The program did not run.")
        shown_result = c
        parts, truncated = _streams(
            c, limits.max_output_chars, stdout_label="compiler stdout", stderr_label="compiler stderr"
        )
    else:
        r = response.run_result
        if outcome is Outcome.TIMEOUT:
            lines.append(
                f"Time limit exceeded: the program was still running after {_seconds(limits.run_timeout)} and was "
                "stopped."
            )
        elif outcome is Outcome.MEMORY_LIMIT:
            lines.append(
                f"Memory limit exceeded: the program used more than {limits.memory_limit_mb} MB and was stopped."
            )
        elif r is None:
            lines.append(f"The sandbox did not run the program: {response.message or response.status}.")
        elif r.return_code is not None:
            lines.append(f"Exit code: {r.return_code}")
        else:
            lines.append(f"The program ended abnormally (status {r.status}).")
        shown_result = r
        parts, truncated = _streams(r, limits.max_output_chars) if r is not None else ([], False)
    if not parts and outcome in (Outcome.SUCCESS, Outcome.RUNTIME_ERROR):
        parts = ["(no output)\n"]
    text = "\n".join(lines) + "\n" + "".join(parts)
    if _was_cut_by_server(response, shown_result):
        text += "[the sandbox cut the output at its size limit]\n"
    return Rendered(text=text.rstrip("\n"), outcome=outcome, truncated=truncated)


def render_cases(response: RunCasesResponse, limits: Limits) -> Rendered:
    """One program's runs on several stdin cases: a compile failure once, else each case as a single run reads,
    under a `Case i (stdin ...)` heading, with `expected output` shown where a case had one and did not match.
    The outcome is the first failing case's (success when every case ran and matched)."""
    if response.cases and all(c.skipped for c in response.cases) and response.compile_result is not None:
        return render_response(RunCodeResponse(status=response.status, message=response.message,
                                               compile_result=response.compile_result), limits)
    blocks: list[str] = []
    outcome, truncated = Outcome.SUCCESS, False
    per_case = Limits(limits.run_timeout, limits.compile_timeout, limits.memory_limit_mb,
                      max(200, limits.max_output_chars // max(1, len(response.cases))))
    for i, case in enumerate(response.cases, 1):
        if case.skipped:
            blocks.append(f"Case {i}: not run (an earlier case failed).")
            continue
        one = render_response(RunCodeResponse(status=case.status, message=case.message,
                                              run_result=case.run_result), per_case)
        text = f"Case {i}: {one.text}"
        if case.passed is False and one.outcome is Outcome.SUCCESS:
            text += "\n(wrong answer: the output differs from the expected output)"
        blocks.append(text)
        truncated = truncated or one.truncated
        if outcome is Outcome.SUCCESS and (one.outcome is not Outcome.SUCCESS or case.passed is False):
            outcome = one.outcome if one.outcome is not Outcome.SUCCESS else Outcome.RUNTIME_ERROR
    return Rendered(text="\n\n".join(blocks), outcome=outcome, truncated=truncated)


def render_failure(outcome: Outcome, reason: str) -> Rendered:
    """No result. A refused request (unknown language, bad file) is the call's to fix; the rest is the sandbox's."""
    if outcome is Outcome.REJECTED:
        text = f"The sandbox refused to run the code ({reason})."
    else:
        text = (
            f"Sandbox error: the code could not be run ({reason}). "
            "This is a problem of the code sandbox, not of the code."
        )
    return Rendered(text=text, outcome=outcome, truncated=False)


VERL_NOTHING_TO_SHOW = "no stdout here"


def render_verl(response: Optional[RunCodeResponse], outcome: Outcome) -> Rendered:
    """verl's SandboxFusionTool text: stdout then stderr, as they are, when the program ran to its end (whatever
    its exit code); `no stdout here` otherwise (timeout, compile error, sandbox failure). A model trained under verl
    saw exactly this."""
    run = response.run_result if response is not None else None
    if run is None or run.status != "Finished":
        return Rendered(VERL_NOTHING_TO_SHOW, outcome, False)
    return Rendered((run.stdout or "") + (run.stderr or ""), outcome, False)
