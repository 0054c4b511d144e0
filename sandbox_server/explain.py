"""Why a step ended the way it did, in the fields Sandbox Fusion clients read.

Clients parse SF's status values strictly, so a kill never invents a status: the reason goes into the
step's stderr (what verl's tool shows the model) and the response's `message`, plus our `killed_by`.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Optional

from .isolation import StepResult
from .models import KillReason

NOTE_PREFIX = "[sandbox] "


@dataclass(frozen=True)
class StepLimits:
    timeout: float
    memory_bytes: int
    max_output_bytes: int
    output_kill_bytes: int
    pids_limit: int


def _seconds(value: float) -> str:
    return f"{value:g} s"


def kill_reason(step: StepResult) -> Optional[KillReason]:
    out = step.outcome
    if out.timed_out:
        return KillReason.timeout
    if out.output_limit_killed:
        return KillReason.output_limit
    if step.oom_killed and out.return_code == 128 + signal.SIGKILL:
        return KillReason.memory
    if out.return_code == 128 + signal.SIGXCPU:
        return KillReason.cpu_time
    return None


def step_notes(step: StepResult, limits: StepLimits, cpu_limit_s: int) -> list[str]:
    """Short sentences, most important first; empty for a run nothing interfered with."""
    out = step.outcome
    reason = kill_reason(step)
    memory_mb = limits.memory_bytes // 2**20
    notes: list[str] = []
    if reason is KillReason.timeout:
        notes.append(f"killed: wall-clock timeout of {_seconds(limits.timeout)} exceeded")
    elif reason is KillReason.output_limit:
        notes.append(f"killed: output limit (more than {limits.output_kill_bytes} bytes on stdout+stderr)")
    elif reason is KillReason.memory:
        notes.append(f"killed: memory limit {memory_mb} MB exceeded")
    elif reason is KillReason.cpu_time:
        notes.append(f"killed: CPU time limit exceeded (SIGXCPU; this step's limit is {cpu_limit_s} s)")
    if step.oom_killed and reason is not KillReason.memory:
        notes.append(f"a process was killed: memory limit {memory_mb} MB exceeded")
    if out.output_truncated:
        notes.append(f"output truncated at {limits.max_output_bytes} bytes per stream")
    if step.pids_limit_hits:
        notes.append(f"process limit reached: {limits.pids_limit} processes/threads per run "
                     f"({step.pids_limit_hits} fork/clone calls refused)")
    return notes


def with_notes(stderr: str, notes: list[str]) -> str:
    if not notes:
        return stderr
    sep = "" if not stderr or stderr.endswith("\n") else "\n"
    return stderr + sep + "".join(f"{NOTE_PREFIX}{n}\n" for n in notes)
