"""Per-call figures of the code tool and their running aggregate (what a dashboard or the trainer logs)."""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional


class Outcome(str, Enum):
    """How a call ended. The first group is the call's own doing (REJECTED too: the server refused the request, e.g.
    an unknown language); the second is the sandbox's, not the model's. QUEUE_TIMEOUT: the call waited longer than
    `queue_timeout` for a worker slot or rate token and was never sent; CANCELLED: the caller stopped waiting (the
    session's bound, or the rollout ended)."""

    SUCCESS = "success"
    RUNTIME_ERROR = "runtime_error"
    COMPILE_ERROR = "compile_error"
    TIMEOUT = "timeout"
    COMPILE_TIMEOUT = "compile_timeout"
    MEMORY_LIMIT = "memory_limit"
    INVALID_ARGUMENTS = "invalid_arguments"
    REJECTED = "rejected"

    UNAVAILABLE = "unavailable"
    SANDBOX_ERROR = "sandbox_error"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    QUEUE_TIMEOUT = "queue_timeout"
    CANCELLED = "cancelled"
    BAD_RESPONSE = "bad_response"
    INTERNAL_ERROR = "internal_error"

    @property
    def is_infrastructure_failure(self) -> bool:
        return self in _INFRA


_INFRA = {
    Outcome.UNAVAILABLE,
    Outcome.SANDBOX_ERROR,
    Outcome.DEADLINE_EXCEEDED,
    Outcome.QUEUE_TIMEOUT,
    Outcome.CANCELLED,
    Outcome.BAD_RESPONSE,
    Outcome.INTERNAL_ERROR,
}


@dataclass
class CallMetrics:
    """One `execute`. Times in seconds; `queue_wait_s` is time spent waiting for a worker slot and a rate token."""

    outcome: Outcome
    latency_s: float
    queue_wait_s: float
    attempts: int
    language: str
    http_status: Optional[int] = None
    execution_time_s: Optional[float] = None
    output_truncated: bool = False
    error: Optional[str] = None
    server: Optional[str] = None
    """The sandbox endpoint that answered (the last one tried when none did)."""
    servers_tried: int = 0
    # From the sandbox's own answer (the step that ran last: the run, or the compile when it failed).
    return_code: Optional[int] = None
    cpu_time_s: Optional[float] = None
    compile_time_s: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    kill_reason: Optional[str] = None
    """timeout, memory, output_limit, cpu_time, pids: why the sandbox stopped the program."""
    executor: Optional[str] = None

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)

    def as_dict(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies and costs more than the rest of the tool's bookkeeping.
        return {
            "outcome": self.outcome.value,
            "latency_s": self.latency_s,
            "queue_wait_s": self.queue_wait_s,
            "attempts": self.attempts,
            "retries": self.retries,
            "language": self.language,
            "http_status": self.http_status,
            "execution_time_s": self.execution_time_s,
            "output_truncated": self.output_truncated,
            "error": self.error,
            "server": self.server,
            "servers_tried": self.servers_tried,
            "return_code": self.return_code,
            "cpu_time_s": self.cpu_time_s,
            "compile_time_s": self.compile_time_s,
            "peak_memory_mb": self.peak_memory_mb,
            "kill_reason": self.kill_reason,
            "executor": self.executor,
            "infrastructure_failure": self.outcome.is_infrastructure_failure,
        }


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


@dataclass
class MetricsAggregate:
    """Totals since the last reset, plus latency percentiles over the most recent `window` calls."""

    window: int = 10_000
    calls: int = 0
    retries: int = 0
    outcomes: Counter = field(default_factory=Counter)
    _latencies: deque = field(default_factory=deque, repr=False)
    _queue_waits: deque = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        self._latencies = deque(maxlen=self.window)
        self._queue_waits = deque(maxlen=self.window)

    def record(self, m: CallMetrics) -> None:
        self.calls += 1
        self.retries += m.retries
        self.outcomes[m.outcome.value] += 1
        self._latencies.append(m.latency_s)
        self._queue_waits.append(m.queue_wait_s)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self._latencies)
        qw = sorted(self._queue_waits)
        infra = sum(n for o, n in self.outcomes.items() if Outcome(o).is_infrastructure_failure)
        return {
            "calls": self.calls,
            "retries": self.retries,
            "outcomes": dict(self.outcomes),
            "infrastructure_failures": infra,
            "latency_s_p50": _percentile(lat, 0.50),
            "latency_s_p99": _percentile(lat, 0.99),
            "latency_s_mean": (sum(lat) / len(lat)) if lat else math.nan,
            "queue_wait_s_p50": _percentile(qw, 0.50),
            "queue_wait_s_p99": _percentile(qw, 0.99),
        }
