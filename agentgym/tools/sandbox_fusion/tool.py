"""`SandboxFusionTool`: the model's `code_interpreter`, running code in a Sandbox Fusion compatible server."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional
from uuid import uuid4

from agentgym.storable_text import first_lone_surrogate
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.embedded_sandbox import EmbeddedSandbox, EmbeddedSandboxError, shared_embedded_sandbox
from agentgym.tools.rate_limit import AsyncRateLimiter, GlobalTokenBucket, RayOrLocalTokenBucket, TokenBucket
from agentgym.tools.sandbox_fusion.client import CallResult, RetryPolicy, SandboxClient
from agentgym.tools.sandbox_fusion.config import SandboxFusionToolConfig, run_code_endpoint
from agentgym.tools.sandbox_fusion.http import PROCESS_SESSIONS
from agentgym.tools.sandbox_fusion.metrics import CallMetrics, MetricsAggregate, Outcome
from agentgym.tools.sandbox_fusion.output import (
    Limits,
    Rendered,
    render_cases,
    render_failure,
    render_response,
    render_verl,
)
from agentgym.tools.sandbox_fusion.wire import (
    RunCase,
    RunCasesRequest,
    RunCasesResponse,
    RunCodeRequest,
    RunCodeResponse,
)
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

logger = logging.getLogger(__name__)

DEFAULT_TOOL_SCHEMA = OpenAIFunctionToolSchema.model_validate(
    {
        "type": "function",
        "function": {
            "name": "code_interpreter",
            "description": "Run a program and see its output (stdout, stderr, exit code).",
            "parameters": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "The complete program to run."},
                    "language": {
                        "type": "string",
                        "description": "Programming language of the code, e.g. python or bash. Default: python.",
                    },
                },
                "required": ["code"],
            },
        },
    }
)


class SandboxFusionTool(BaseTool):
    """Runs the model's code in a sandbox server and shows it the outcome.

    Config keys: see `SandboxFusionToolConfig` (verl's, plus ours). With no `sandbox_fusion_url`, the process's
    embedded sandbox server is started on first use. One tool object serves any number of trajectories and calls at
    once; a call never raises into the rollout: whatever fails comes back as text for the model, with the reason
    in the metrics (`outcome`).
    """

    default_output_format = "agentgym"

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None = None):
        super().__init__(config, tool_schema or DEFAULT_TOOL_SCHEMA)
        config = {"output_format": self.default_output_format, **(config or {})}
        self.settings = SandboxFusionToolConfig.from_tool_config(config, tool=type(self).__name__)
        s = self.settings
        self._embedded: Optional[EmbeddedSandbox] = None
        if s.sandbox_fusion_url is None:
            self._embedded = shared_embedded_sandbox(s.embedded_server_args, s.embedded_startup_timeout)
        self._client = SandboxClient(
            endpoint=self._endpoint,
            sessions=PROCESS_SESSIONS,
            limiter=self._make_limiter(),
            max_in_flight=s.num_workers,
            queue_timeout=s.queue_timeout,
            retry=RetryPolicy(
                max_retries=s.max_retries,
                initial_backoff=s.retry_initial_backoff,
                max_backoff=s.retry_max_backoff,
                retry_on_status=tuple(s.retry_on_status),
            ),
        )
        self._instances: dict[str, dict[str, Any]] = {}
        self._metrics = MetricsAggregate()

    def _make_limiter(self) -> AsyncRateLimiter:
        s = self.settings
        local = TokenBucket(s.rate_limit, s.effective_burst)
        if not s.enable_global_rate_limit or s.run_code_url is None:
            # An embedded server serves this process alone, so there is nothing run-wide to protect.
            return local
        key = s.global_rate_limiter_name or s.run_code_url
        return RayOrLocalTokenBucket(GlobalTokenBucket(key, s.rate_limit, s.effective_burst), local)

    async def _endpoint(self) -> str:
        if self._embedded is None:
            assert self.settings.run_code_url is not None
            return self.settings.run_code_url
        return run_code_endpoint(await self._embedded.aurl())

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        return self.tool_schema

    @property
    def execute_timeout(self) -> float:
        """The session's bound on one call: this tool bounds itself (queue_timeout, deadline), so the session only
        steps in if those fail, a little after them."""
        return self.settings.call_bound + 5.0

    async def create(
        self, instance_id: Optional[str] = None, ground_truth: Optional[str] = None, **kwargs: Any
    ) -> tuple[str, ToolResponse]:
        instance_id = instance_id or str(uuid4())
        self._instances[instance_id] = {"ground_truth": ground_truth, "calls": 0}
        return instance_id, ToolResponse()

    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[ToolResponse, float, dict]:
        """Run `parameters["code"]`; `language` and `timeout` may come from the call or the row's execute_kwargs
        (the call wins), `stdin` and `files` from execute_kwargs. A row's `cases` (execute_kwargs: a list of
        stdin strings or `{"stdin", "expected_output"}`) runs the program once per case through our server's
        `/run_cases` (compiled once, each case its own sandbox) and shows every case's outcome."""
        started = time.monotonic()
        s = self.settings
        language = str(parameters.get("language") or kwargs.get("language") or s.default_language)
        error: Optional[str] = None
        try:
            rendered, result = await self._run(parameters, kwargs, language)
        except asyncio.CancelledError:
            # Counted, so that a summary shows every call; the caller (e.g. the session's bound) decided to stop.
            self._metrics.record(
                CallMetrics(Outcome.CANCELLED, time.monotonic() - started, 0.0, 0, language, error="cancelled")
            )
            raise
        except EmbeddedSandboxError as exc:
            # The model gets the gist; the server's output (the cause) goes to the metrics and the log.
            rendered = render_failure(Outcome.UNAVAILABLE, "the sandbox server could not be started")
            result, error = None, str(exc)
        except Exception as exc:  # a bug of ours must not end the rollout; it is logged and counted
            logger.exception("code tool failed on its own side")
            error = f"{type(exc).__name__}: {exc}"
            rendered, result = render_failure(Outcome.INTERNAL_ERROR, error), None
        answered = result.response if result else None
        if (s.output_format == "verl" and rendered.outcome is not Outcome.INVALID_ARGUMENTS
                and not isinstance(answered, RunCasesResponse)):  # verl's text has no form for several cases
            rendered = render_verl(answered, rendered.outcome)
        metrics = CallMetrics(
            outcome=rendered.outcome,
            latency_s=time.monotonic() - started,
            queue_wait_s=result.queue_wait_s if result else 0.0,
            attempts=result.attempts if result else 0,
            language=language,
            http_status=result.http_status if result else None,
            execution_time_s=(
                result.response.run_result.execution_time
                if result and isinstance(result.response, RunCodeResponse) and result.response.run_result
                else None
            ),
            output_truncated=rendered.truncated,
            error=result.error if result else error,
        )
        self._metrics.record(metrics)
        if instance_id in self._instances:
            self._instances[instance_id]["calls"] += 1
        return ToolResponse(text=rendered.text), 0.0, metrics.as_dict()

    async def _run(
        self, parameters: dict[str, Any], kwargs: dict[str, Any], language: str
    ) -> tuple[Rendered, Optional[CallResult]]:
        s = self.settings
        code = parameters.get("code")
        if code is None or (isinstance(code, str) and not code.strip()):
            return (
                Rendered(
                    "No code given: pass the program to run in the `code` argument.", Outcome.INVALID_ARGUMENTS, False
                ),
                None,
            )
        if not isinstance(code, str):
            code = str(code)  # verl does the same for numbers and the like
        for argument, text in (("code", code), ("language", language)):
            bad = _not_text(argument, text)
            if bad is not None:
                return Rendered(bad, Outcome.INVALID_ARGUMENTS, False), None
        run_timeout = _as_timeout(parameters.get("timeout", kwargs.get("timeout")), s.default_timeout)
        run_timeout = min(run_timeout, s.effective_max_timeout)
        compile_timeout = s.compile_timeout_for(run_timeout)
        request = RunCodeRequest(
            code=code,
            language=language,
            compile_timeout=compile_timeout,
            run_timeout=run_timeout,
            memory_limit_MB=s.memory_limit_mb,
            stdin=kwargs.get("stdin"),
            files=kwargs.get("files") or {},
        )
        cases = _cases(kwargs.get("cases"))
        if cases:
            request = RunCasesRequest(**request.model_dump(), cases=cases)
            # Each case may take the run timeout: the HTTP request and the call's deadline grow with them.
            budget = run_timeout * len(cases)
            result = await self._client.run_cases(
                request, request_timeout=s.request_timeout_for(budget), deadline=s.deadline_for(budget)
            )
        else:
            result = await self._client.run_code(
                request, request_timeout=s.request_timeout_for(run_timeout), deadline=s.deadline_for(run_timeout)
            )
        if result.response is None:
            assert result.error_outcome is not None and result.error is not None
            return render_failure(result.error_outcome, result.error), result
        limits = Limits(run_timeout, compile_timeout, s.memory_limit_mb, s.max_output_chars)
        if isinstance(result.response, RunCodeResponse):
            return render_response(result.response, limits), result
        return render_cases(result.response, limits), result

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        return 0.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._instances.pop(instance_id, None)

    def metrics_summary(self, reset: bool = False) -> dict[str, Any]:
        """Aggregate of every call this tool object made since it was built (or last reset)."""
        summary = self._metrics.summary()
        if reset:
            self._metrics = MetricsAggregate()
        return summary


def _not_text(argument: str, text: str) -> Optional[str]:
    """What to tell the model when its argument holds a lone UTF-16 surrogate (a JSON escape like `\\ud800`
    without its pair): no program file can hold it, and the mistake is the model's, not the sandbox's."""
    at = first_lone_surrogate(text)
    if at is None:
        return None
    char = f"\\u{ord(text[at]):04x}"
    return (
        f"Error: the `{argument}` argument contains the escape {char} at character {at}, half of a UTF-16 surrogate "
        f"pair, which is not text. Write the character itself, or double the backslash (\\{char}) if the program "
        "should contain the escape sequence."
    )


def _cases(value: Any) -> list[RunCase]:
    """A row's `cases`: stdin strings, or mappings with `stdin` and optionally `expected_output`."""
    if not isinstance(value, (list, tuple)):
        return []
    return [RunCase(stdin=c) if isinstance(c, str) else RunCase.model_validate(c) for c in value]


def _as_timeout(value: Any, default: float) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        return default
    return t if t > 0 else default


class VerlSandboxFusionTool(SandboxFusionTool):
    """What verl's class path (`verl.tools.sandbox_fusion_tools.SandboxFusionTool`) loads: this tool with verl's
    output text as the default (`output_format: verl`), so a verl recipe shows its model what verl showed it."""

    default_output_format = "verl"
