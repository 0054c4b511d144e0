"""Failed trajectories of one step: a one-line report for the console, and the bound past which the run stops.

A failed trajectory (its `error` set: an engine or environment exception, a row that names an unknown
interaction, ...) trains on nothing. A few are noise; many mean the run is broken, and training on the rest
would hide it until the metrics are read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from agentgym.errors import RolloutFailed
from agentgym.trajectory import Trajectory

_SHOWN_KINDS = 3
_ERROR_CHARS = 300


def _kind(error: str) -> str:
    first = error.strip().splitlines()[0] if error.strip() else "(empty error)"
    return first[:120]


@dataclass(frozen=True)
class FailureReport:
    total: int
    failed: int
    kinds: Counter
    first: Trajectory | None

    @classmethod
    def of(cls, trajectories: Sequence[Trajectory]) -> "FailureReport":
        failed = [t for t in trajectories if t.failed]
        return cls(len(trajectories), len(failed), Counter(_kind(t.error or "") for t in failed),
                   failed[0] if failed else None)

    @property
    def fraction(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def summary(self, step: int) -> str:
        """`step 3: 2 of 8 trajectories failed (50%): 2x ValueError: ...; first (uid u1): <its error>`."""
        kinds = "; ".join(f"{n}x {kind}" for kind, n in self.kinds.most_common(_SHOWN_KINDS))
        if len(self.kinds) > _SHOWN_KINDS:
            kinds += f"; {len(self.kinds) - _SHOWN_KINDS} other kind(s)"
        first = self.first
        error = (first.error or "")[:_ERROR_CHARS] if first is not None else ""
        return (f"step {step}: {self.failed} of {self.total} trajectories failed ({self.fraction:.0%}): {kinds}. "
                f"First (trajectory {first.uid if first else '?'}): {error}")


def check_failures(trajectories: Sequence[Trajectory], step: int, max_failed_fraction: float) -> FailureReport:
    """Raise `RolloutFailed` when every trajectory failed or more than `max_failed_fraction` did."""
    report = FailureReport.of(trajectories)
    if report.failed == 0:
        return report
    if report.failed == report.total:
        raise RolloutFailed(
            f"{report.summary(step)}. Every trajectory of the step failed, so there is nothing to train on; the run "
            "stops. Fix the cause above (the trajectories' `error` field has each one's reason).")
    if report.fraction > max_failed_fraction:
        raise RolloutFailed(
            f"{report.summary(step)}. That is more than trainer.max_failed_fraction={max_failed_fraction:g}; the run "
            "stops. Fix the cause above, or raise trainer.max_failed_fraction to train on the rest anyway.")
    return report
