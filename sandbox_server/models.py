"""Wire models: Sandbox Fusion's /run_code JSON, plus optional fields old clients ignore."""

from __future__ import annotations

import posixpath
from enum import Enum
from typing import Dict, List, Optional

from pydantic import BaseModel, Field, field_validator


class CommandRunStatus(str, Enum):
    Finished = "Finished"
    Error = "Error"
    TimeLimitExceeded = "TimeLimitExceeded"


class KillReason(str, Enum):
    """Why the sandbox ended a step early (an extension; the step's SF status stays Finished/TimeLimitExceeded)."""
    timeout = "timeout"
    memory = "memory"
    output_limit = "output_limit"
    cpu_time = "cpu_time"


class RunStatus(str, Enum):
    Success = "Success"
    Failed = "Failed"
    SandboxError = "SandboxError"


def check_relative_path(path: str) -> str:
    """Reject paths that could leave the work dir; the error text tells the caller what to send instead."""
    if not path or "\x00" in path:
        raise ValueError(f"file path {path!r} is empty or contains NUL; use a relative path like 'data/input.txt'")
    if path.startswith("/"):
        raise ValueError(f"file path {path!r} is absolute; use a path relative to the work dir")
    parts = path.split("/")
    if ".." in parts:
        raise ValueError(f"file path {path!r} contains '..'; paths must stay inside the work dir")
    norm = posixpath.normpath(path)
    if norm in (".", ""):
        raise ValueError(f"file path {path!r} names the work dir itself, not a file")
    return path


class RunCodeRequest(BaseModel):
    compile_timeout: float = Field(10, gt=0, description="compile timeout for compiled languages (s)")
    run_timeout: float = Field(10, gt=0, description="code run timeout (s)")
    memory_limit_MB: int = Field(-1, description="memory limit in MB; -1 uses the server default")
    code: str = Field(..., description="the code to run")
    stdin: Optional[str] = Field(None, description="optional string passed as stdin")
    language: str = Field(..., description="language or execution mode, e.g. python, bash, cpp")
    files: Dict[str, Optional[str]] = Field({}, description="relative path -> base64 content, written before the run")
    fetch_files: List[str] = Field([], description="relative paths returned base64-encoded after the run")
    args: List[str] = Field([], description="extra command-line arguments (pytest and script languages)")

    @field_validator("files")
    @classmethod
    def _files_inside_workdir(cls, files: Dict[str, Optional[str]]) -> Dict[str, Optional[str]]:
        for path in files:
            check_relative_path(path)
        return files

    @field_validator("fetch_files")
    @classmethod
    def _fetch_inside_workdir(cls, paths: List[str]) -> List[str]:
        for path in paths:
            check_relative_path(path)
        return paths


class CommandRunResult(BaseModel):
    status: CommandRunStatus
    execution_time: Optional[float] = None
    return_code: Optional[int] = None
    stdout: Optional[str] = None
    stderr: Optional[str] = None
    # Extensions (Sandbox Fusion clients ignore unknown fields).
    cpu_time: Optional[float] = Field(None, description="CPU seconds used by the whole process tree")
    memory_limit_exceeded: bool = Field(False, description="the kernel OOM-killed a process of this step")
    peak_memory_MB: Optional[float] = None
    output_truncated: bool = Field(False, description="stdout or stderr exceeded the server's cap")
    killed_by: Optional[KillReason] = Field(None, description="why the sandbox stopped this step, if it did")
    pids_limit_reached: bool = Field(False, description="a fork/clone failed at the per-run process limit")
    cached: bool = Field(False, description="a compile step answered from the compile cache (same source, files, "
                         "flags and toolchain compiled before); execution_time is then 0")


class RunCodeResponse(BaseModel):
    status: RunStatus
    message: str
    compile_result: Optional[CommandRunResult] = None
    run_result: Optional[CommandRunResult] = None
    executor_pod_name: Optional[str] = None
    files: Dict[str, str] = {}


class CompareMode(str, Enum):
    """How a case's stdout is checked against `expected_output`."""
    exact = "exact"  # byte for byte
    lines = "lines"  # line by line, trailing whitespace of each line and trailing empty lines ignored
    tokens = "tokens"  # the whitespace-separated tokens


class RunCase(BaseModel):
    stdin: Optional[str] = Field(None, description="the case's stdin")
    expected_output: Optional[str] = Field(None, description="expected stdout; absent: the case is only run")


class RunCasesRequest(RunCodeRequest):
    """/run_cases: one program, compiled once, run once per case, each case its own sandbox with its own limits
    (`run_timeout`, `memory_limit_MB`). `stdin` is unused (each case has its own)."""
    cases: List[RunCase] = Field(..., min_length=1, description="stdin / expected stdout pairs")
    compare: CompareMode = Field(CompareMode.lines, description="how stdout is compared with expected_output")
    stop_on_failure: bool = Field(False, description="skip the cases after the first that fails or mismatches")


class CaseResult(BaseModel):
    status: RunStatus = Field(..., description="this case's run by Sandbox Fusion's rule (Success: exit 0)")
    passed: Optional[bool] = Field(None, description="Success and stdout matches (None: no expected_output)")
    skipped: bool = Field(False, description="not run (stop_on_failure after an earlier failure)")
    message: str = ""
    run_result: Optional[CommandRunResult] = None
    files: Dict[str, str] = {}


class RunCasesResponse(BaseModel):
    status: RunStatus = Field(..., description="Success when the program compiled and every case passed")
    message: str
    compile_result: Optional[CommandRunResult] = None
    cases: List[CaseResult] = []
    passed: int = Field(0, description="cases that passed (ran with exit 0 and matching stdout, if one was given)")
    executor_pod_name: Optional[str] = None


def output_matches(stdout: str, expected: str, mode: CompareMode) -> bool:
    if mode == CompareMode.exact:
        return stdout == expected
    if mode == CompareMode.tokens:
        return stdout.split() == expected.split()

    def norm(text: str) -> list[str]:
        lines = [line.rstrip() for line in text.split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    return norm(stdout) == norm(expected)


def derive_run_status(compile_result: Optional[CommandRunResult],
                      run_result: Optional[CommandRunResult]) -> tuple[RunStatus, str]:
    """Sandbox Fusion's rule: any Error -> SandboxError; else timeout or non-zero exit -> Failed."""
    steps = [r for r in (compile_result, run_result) if r is not None]
    for step in steps:
        if step.status == CommandRunStatus.Error:
            return RunStatus.SandboxError, step.stderr or ""
    if any(s.status == CommandRunStatus.TimeLimitExceeded for s in steps):
        return RunStatus.Failed, ""
    if any(s.return_code is not None and s.return_code != 0 for s in steps):
        return RunStatus.Failed, ""
    return RunStatus.Success, ""
