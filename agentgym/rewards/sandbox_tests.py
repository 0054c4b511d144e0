"""A verl-style reward that runs unit tests in a Sandbox Fusion-compatible sandbox: an expensive, remote check,
meant for `reward_model.reward_manager=rate_limited` (the rate, concurrency and timeout bounds are the manager's).

    custom_reward_function.path=agentgym.rewards.sandbox_tests
    +custom_reward_function.reward_kwargs.sandbox_url=http://127.0.0.1:8080
    reward_model.reward_manager=rate_limited reward_model.rate_limit.max_concurrent=16

The response's last fenced code block (or the whole response when there is none) runs with the row's
`reward_model.ground_truth` appended: test code that fails by raising (asserts) or by a non-zero exit. The score
is 1.0 when the program exits 0, else 0.0; `sandbox_s` (the run's time) and `timed_out` are logged as extra
metrics. A sandbox that cannot be reached or answers with an error raises: the manager records it as that
trajectory's reward error rather than a wrong answer.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from agentgym.tools.sandbox_fusion.config import run_code_endpoint
from agentgym.tools.sandbox_fusion.wire import RunCodeRequest, RunCodeResponse

_CODE_BLOCK = re.compile(r"```[a-zA-Z0-9_+-]*\s*\n(.*?)```", re.S)


def solution_code(solution_str: str) -> str:
    blocks = _CODE_BLOCK.findall(solution_str)
    return blocks[-1] if blocks else solution_str


async def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, *,
                        sandbox_url: str, language: str = "python", run_timeout: float = 10.0,
                        memory_limit_mb: int = 1024) -> dict[str, float]:
    request = RunCodeRequest(code=f"{solution_code(solution_str)}\n\n{ground_truth}\n", language=language,
                             compile_timeout=run_timeout, run_timeout=run_timeout, memory_limit_MB=memory_limit_mb)
    async with httpx.AsyncClient(timeout=run_timeout + 30.0) as client:
        reply = await client.post(run_code_endpoint(sandbox_url), content=request.model_dump_json(),
                                  headers={"content-type": "application/json"})
    if reply.status_code != 200:
        raise RuntimeError(f"the sandbox at {sandbox_url} answered HTTP {reply.status_code}: {reply.text[:200]}")
    response = RunCodeResponse.model_validate_json(reply.content)
    if response.status == "SandboxError":
        raise RuntimeError(f"the sandbox could not run the tests: {response.message[:200]}")
    run = response.run_result
    passed = response.status == "Success" and run is not None and run.return_code == 0
    return {"score": float(passed), "sandbox_s": float(run.execution_time or 0.0) if run else 0.0,
            "timed_out": float(run is not None and run.status == "TimeLimitExceeded")}
