"""The code tool's settings: verl's `SandboxFusionTool` keys plus ours, checked once when the tool is built."""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentgym.errors import ConfigError, validation_problems


class SandboxFusionToolConfig(BaseModel):
    """Settings of `SandboxFusionTool` (the `config:` mapping of its YAML entry).

    verl's keys keep verl's names and defaults, with one change of meaning: `rate_limit` is a rate (requests per
    second, token bucket with `burst`), where verl used it as a cap on concurrent requests. `num_workers` caps the
    requests in flight per process.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Optional[str] = Field(None, description="verl's tool kind marker ('native'); accepted and ignored.")

    # verl's keys
    sandbox_fusion_url: Optional[str] = Field(
        None,
        description="Sandbox server URL: its base (http://host:port) or its /run_code endpoint. Empty or absent: "
        "start a sandbox server in a child process on a free loopback port (one per process).",
    )
    num_workers: int = Field(10, ge=1, description="Most requests in flight at once, per process.")
    rate_limit: float = Field(10.0, gt=0, description="Requests per second allowed to start (token bucket rate).")
    default_timeout: float = Field(30.0, gt=0, description="Run timeout in seconds when the call gives none.")
    default_language: str = Field("python", min_length=1)
    memory_limit_mb: int = Field(1024, ge=1)
    enable_global_rate_limit: bool = Field(
        True,
        description="Share one token bucket among all processes of the Ray job. Needs Ray; a process not "
        "connected to Ray falls back to its own bucket and logs a warning.",
    )

    # ours
    burst: Optional[int] = Field(None, ge=1, description="Token bucket size; default: one second's worth.")
    global_rate_limiter_name: Optional[str] = Field(
        None, description="Name of the run-wide limiter; tools with the same name share it. Default: the URL."
    )
    compile_timeout: Optional[float] = Field(None, gt=0, description="Default: the run timeout (verl's choice).")
    max_timeout: Optional[float] = Field(
        None, gt=0, description="Cap on a `timeout` the call itself asks for. Default: default_timeout."
    )
    request_timeout_margin: float = Field(
        10.0, ge=0, description="Seconds added to compile + run timeouts for the HTTP request's own timeout."
    )
    max_retries: int = Field(
        3,
        ge=0,
        description="Retries after the first attempt, on sandbox-side failures only. Overload answers (429, 503) "
        "are retried until the deadline instead, honouring Retry-After.",
    )
    deadline: Optional[float] = Field(
        None,
        gt=0,
        description="Cap in seconds on one call from its first request to its answer, retries and backoff "
        "included (the queue before the first request is not counted: see queue_timeout). Default: twice the "
        "request timeout.",
    )
    queue_timeout: float = Field(
        600.0,
        gt=0,
        description="Cap in seconds on the wait for a worker slot and a rate token before the first request is sent. "
        "Not part of the deadline; a call that never left the queue ends as `queue_timeout`.",
    )
    retry_initial_backoff: float = Field(0.5, ge=0)
    retry_max_backoff: float = Field(8.0, ge=0)
    retry_on_status: tuple[int, ...] = Field((429, 502, 503, 504), description="HTTP statuses worth a retry.")
    max_output_chars: int = Field(
        4000, ge=64, description="Per stream (stdout, stderr); longer output keeps its head and tail around a marker."
    )
    embedded_server_args: tuple[str, ...] = Field(
        (), description="Extra command-line arguments for the embedded sandbox server."
    )
    embedded_startup_timeout: float = Field(60.0, gt=0)
    output_format: Literal["agentgym", "verl"] = Field(
        "agentgym",
        description="What the model reads: `agentgym` states the outcome (exit code, limits hit, who failed) and "
        "labels stdout/stderr, cutting long streams visibly; `verl` is verl's SandboxFusionTool text, stdout + "
        "stderr as they are, or `no stdout here` when the program did not finish. Loading the tool by verl's class "
        "path makes `verl` the default.",
    )

    @field_validator("sandbox_fusion_url")
    @classmethod
    def _blank_means_embedded(cls, value: Optional[str]) -> Optional[str]:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> "SandboxFusionToolConfig":
        if self.retry_max_backoff < self.retry_initial_backoff:
            raise ValueError("retry_max_backoff must be >= retry_initial_backoff")
        return self

    # Derived values: one place that says how the defaults combine.
    @property
    def effective_burst(self) -> int:
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate_limit))

    @property
    def effective_max_timeout(self) -> float:
        return self.max_timeout if self.max_timeout is not None else self.default_timeout

    def compile_timeout_for(self, run_timeout: float) -> float:
        return self.compile_timeout if self.compile_timeout is not None else run_timeout

    def request_timeout_for(self, run_timeout: float) -> float:
        return self.compile_timeout_for(run_timeout) + run_timeout + self.request_timeout_margin

    def deadline_for(self, run_timeout: float) -> float:
        return self.deadline if self.deadline is not None else 2 * self.request_timeout_for(run_timeout)

    @property
    def call_bound(self) -> float:
        """The longest one `execute` can take: the queue, then the deadline of the longest run a call may ask for."""
        return self.queue_timeout + self.deadline_for(self.effective_max_timeout)

    @property
    def run_code_url(self) -> Optional[str]:
        return None if self.sandbox_fusion_url is None else run_code_endpoint(self.sandbox_fusion_url)

    @classmethod
    def from_tool_config(
        cls, config: dict[str, Any] | None, *, tool: str = "SandboxFusionTool"
    ) -> "SandboxFusionToolConfig":
        """Validate a YAML `config:` mapping; every problem is reported with its key and a fix."""
        try:
            return cls.model_validate(dict(config or {}))
        except ValidationError as exc:
            known = ", ".join(sorted(cls.model_fields))
            raise ConfigError(
                validation_problems(exc),
                entry=tool,
                fix=f"edit the tool's `config:` mapping; known keys: {known}.",
            ) from None


def run_code_endpoint(url: str) -> str:
    """verl configs name the /run_code endpoint itself; Sandbox Fusion's client names the base. Accept both."""
    url = url.rstrip("/")
    return url if url.endswith("/run_code") else f"{url}/run_code"


def run_cases_endpoint(url: str) -> str:
    """Our server's /run_cases (one compile, many stdin cases) next to the /run_code endpoint or base URL given."""
    url = url.rstrip("/")
    return (url[: -len("/run_code")] if url.endswith("/run_code") else url) + "/run_cases"
