"""Sandbox Fusion's `/run_code` JSON, as pydantic models. Extra fields a server adds are kept, not rejected."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class RunCodeRequest(BaseModel):
    code: str
    language: str
    compile_timeout: float
    run_timeout: float
    memory_limit_MB: int
    stdin: Optional[str] = None
    files: dict[str, Optional[str]] = Field(default_factory=dict)
    fetch_files: list[str] = Field(default_factory=list)


class CommandRunResult(BaseModel):
    """One command (compile or run). `status` is Finished, Error or TimeLimitExceeded in Sandbox Fusion; our server
    may add its own, so any string is accepted and the formatter says what it does not know."""

    model_config = ConfigDict(extra="allow")

    status: str
    execution_time: Optional[float] = None
    return_code: Optional[int] = None
    stdout: Optional[str] = None
    stderr: Optional[str] = None
    # Extensions of our server (absent from Sandbox Fusion's answers).
    cpu_time: Optional[float] = None
    memory_limit_exceeded: Optional[bool] = None
    peak_memory_MB: Optional[float] = None
    output_truncated: Optional[bool] = None


class RunCodeResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["Success", "Failed", "SandboxError"]
    message: str = ""
    compile_result: Optional[CommandRunResult] = None
    run_result: Optional[CommandRunResult] = None
    files: dict[str, str] = Field(default_factory=dict)
    output_truncated: Optional[bool] = None


class RunCase(BaseModel):
    stdin: Optional[str] = None
    expected_output: Optional[str] = None


class RunCasesRequest(RunCodeRequest):
    """Our server's `/run_cases` extension: one program, compiled once, one sandbox per case."""

    cases: list[RunCase]
    compare: Literal["exact", "lines", "tokens"] = "lines"
    stop_on_failure: bool = False


class CaseResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["Success", "Failed", "SandboxError"]
    passed: Optional[bool] = None
    skipped: bool = False
    message: str = ""
    run_result: Optional[CommandRunResult] = None


class RunCasesResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["Success", "Failed", "SandboxError"]
    message: str = ""
    compile_result: Optional[CommandRunResult] = None
    cases: list[CaseResult] = Field(default_factory=list)
    passed: int = 0
