"""Where a forked run's time goes, phase by phase, over the last runs: exposed by /v1/stats so that an operator
(or a benchmark) can tell a slow sandbox from a slow machine without a profiler."""

from __future__ import annotations

import collections
import statistics
from typing import Mapping

# In request order. Timestamps come from CLOCK_MONOTONIC, which namespaces do not change.
PHASES = (
    "acquire",     # waiting for a prepared run (0 when one was ready)
    "arm",         # memory limit, output pipes, input blob, "go" sent
    "to_init",     # "go" sent -> the run's init has it
    "init_setup",  # inputs written, cgroup ns, privileges dropped, program forked
    "program",     # the program runs and exits
    "init_exit",   # program reaped -> init gone (pid namespace torn down)
    "to_server",   # init gone -> the server has the exit status
    "collect",     # kill check, output drained, cgroup counters, fetch_files
    "request",     # the whole run_code call, as seen by the executor
)


class PhaseTimes:
    """Rolling window of per-phase durations (seconds) of the last `window` forked runs."""

    def __init__(self, window: int = 512):
        self._samples = {name: collections.deque(maxlen=window) for name in PHASES}

    def add(self, durations: Mapping[str, float]) -> None:
        for name, seconds in durations.items():
            if name in self._samples and 0.0 <= seconds < 3600.0:
                self._samples[name].append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        """{phase: {"runs", "mean_ms", "p50_ms", "p95_ms"}} for phases with samples."""
        out: dict[str, dict[str, float]] = {}
        for name, samples in self._samples.items():
            if not samples:
                continue
            ordered = sorted(samples)
            out[name] = {"runs": len(ordered), "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
                         "p50_ms": round(ordered[len(ordered) // 2] * 1e3, 3),
                         "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1e3, 3)}
        return out
