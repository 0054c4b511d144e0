"""A verl-style reward that runs unit tests in a Sandbox Fusion-compatible sandbox: an expensive, remote check,
meant for `reward_model.reward_manager=rate_limited` (the rate, concurrency and timeout bounds are the manager's).

    custom_reward_function.path=agentgym.rewards.sandbox_tests
    +custom_reward_function.reward_kwargs.sandbox_url=http://127.0.0.1:8080

The response's last fenced code block (or the whole response when there is none) is the program. Two kinds of
`reward_model.ground_truth`:
- test code (a string): appended to the program, which fails by raising (asserts) or by a non-zero exit; the
  score is 1.0 when it exits 0, else 0.0.
- stdin/stdout cases, APPS/TACO/CodeContests style: `{"inputs": [...], "outputs": [...]}` (or its JSON text). The
  program runs once per case (our server's `/run_cases`: compiled once, each case its own sandbox and limits;
  against a server without it, one `/run_code` per case), stdout compared line by line (trailing whitespace
  ignored); the score is 1.0 when every case passes. `cases_passed` (a fraction) is logged; with
  `stop_on_failure` (default) cases after the first failure are not run and count as failed.
`sandbox_s` (run time; summed over cases) and `timed_out` are logged as extra metrics. A sandbox that cannot be
reached or answers with an error raises: the manager records it as that trajectory's reward error rather than a
wrong answer.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

import httpx

from agentgym.tools.sandbox_fusion.config import run_cases_endpoint, run_code_endpoint
from agentgym.tools.sandbox_fusion.wire import RunCase, RunCasesRequest, RunCasesResponse, RunCodeRequest, RunCodeResponse

_CODE_BLOCK = re.compile(r"```[a-zA-Z0-9_+-]*\s*\n(.*?)```", re.S)


def solution_code(solution_str: str) -> str:
    blocks = _CODE_BLOCK.findall(solution_str)
    return blocks[-1] if blocks else solution_str


def stdio_cases(ground_truth: Any) -> Optional[list[RunCase]]:
    """The cases of an `{"inputs": [...], "outputs": [...]}` ground truth (dict or JSON text); None for test code."""
    truth = ground_truth
    if isinstance(truth, str) and truth.lstrip().startswith("{"):
        try:
            truth = json.loads(truth)
        except ValueError:
            return None
    if not isinstance(truth, dict):
        return None
    inputs, outputs = truth.get("inputs"), truth.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs or len(inputs) != len(outputs):
        return None
    return [RunCase(stdin=str(i), expected_output=str(o)) for i, o in zip(inputs, outputs)]


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


async def _post(client: httpx.AsyncClient, url: str, body: str) -> httpx.Response:
    return await client.post(url, content=body, headers={"content-type": "application/json"})


def _checked(reply: httpx.Response, sandbox_url: str) -> bytes:
    if reply.status_code != 200:
        raise RuntimeError(f"the sandbox at {sandbox_url} answered HTTP {reply.status_code}: {reply.text[:200]}")
    return reply.content


async def _score_cases(client: httpx.AsyncClient, request: RunCasesRequest, sandbox_url: str) -> dict[str, float]:
    reply = await _post(client, run_cases_endpoint(sandbox_url), request.model_dump_json())
    if reply.status_code == 404:  # a server without /run_cases (Sandbox Fusion itself): one /run_code per case
        return await _score_cases_one_by_one(client, request, sandbox_url)
    response = RunCasesResponse.model_validate_json(_checked(reply, sandbox_url))
    if response.status == "SandboxError":
        raise RuntimeError(f"the sandbox could not run the cases: {response.message[:200]}")
    runs = [c.run_result for c in response.cases if c.run_result is not None]
    return {"score": float(response.status == "Success"), "cases_passed": response.passed / len(request.cases),
            "sandbox_s": float(sum(r.execution_time or 0.0 for r in runs)),
            "timed_out": float(any(r.status == "TimeLimitExceeded" for r in runs))}


async def _score_cases_one_by_one(client: httpx.AsyncClient, request: RunCasesRequest, sandbox_url: str
                                  ) -> dict[str, float]:
    passed, seconds, timed_out = 0, 0.0, False
    for case in request.cases:
        single = RunCodeRequest(**request.model_dump(exclude={"cases", "compare", "stop_on_failure", "stdin"}),
                                stdin=case.stdin)
        reply = await _post(client, run_code_endpoint(sandbox_url), single.model_dump_json())
        response = RunCodeResponse.model_validate_json(_checked(reply, sandbox_url))
        if response.status == "SandboxError":
            raise RuntimeError(f"the sandbox could not run the tests: {response.message[:200]}")
        run = response.run_result
        seconds += float(run.execution_time or 0.0) if run else 0.0
        timed_out = timed_out or (run is not None and run.status == "TimeLimitExceeded")
        ok = response.status == "Success" and run is not None and \
            _lines(run.stdout or "") == _lines(case.expected_output or "")
        passed += ok
        if not ok and request.stop_on_failure:
            break
    return {"score": float(passed == len(request.cases)), "cases_passed": passed / len(request.cases),
            "sandbox_s": seconds, "timed_out": float(timed_out)}


async def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, *,
                        sandbox_url: str, language: str = "python", run_timeout: float = 10.0,
                        memory_limit_mb: int = 1024, stop_on_failure: bool = True) -> dict[str, float]:
    cases = stdio_cases(ground_truth)
    async with httpx.AsyncClient(timeout=run_timeout * (len(cases) if cases else 1) + 30.0) as client:
        if cases is not None:
            request = RunCasesRequest(code=solution_code(solution_str), language=language,
                                      compile_timeout=run_timeout, run_timeout=run_timeout,
                                      memory_limit_MB=memory_limit_mb, cases=cases, stop_on_failure=stop_on_failure)
            return await _score_cases(client, request, sandbox_url)
        request = RunCodeRequest(code=f"{solution_code(solution_str)}\n\n{ground_truth}\n", language=language,
                                 compile_timeout=run_timeout, run_timeout=run_timeout, memory_limit_MB=memory_limit_mb)
        reply = await _post(client, run_code_endpoint(sandbox_url), request.model_dump_json())
    response = RunCodeResponse.model_validate_json(_checked(reply, sandbox_url))
    if response.status == "SandboxError":
        raise RuntimeError(f"the sandbox could not run the tests: {response.message[:200]}")
    run = response.run_result
    passed = response.status == "Success" and run is not None and run.return_code == 0
    return {"score": float(passed), "sandbox_s": float(run.execution_time or 0.0) if run else 0.0,
            "timed_out": float(run is not None and run.status == "TimeLimitExceeded")}
