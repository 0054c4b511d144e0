"""When each of a rank's training calls ran, by the rank's own clock: a per-rank timeline of forwards and updates.

Why: the driver's phase timers see a call from outside (queueing and transfer included) and cannot say whether
two groups' calls really ran at the same time. The rank records when its call started and ended, so the timeline
of a step (which group waited for which, whether the critic's update ran beside the actor's) can be read back
from the ranks themselves (`TrainWorker.call_spans`). Times are `time.time()`: comparable between the processes of
one machine (and across machines as far as their clocks agree).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class CallSpan:
    """One call on one rank: its method name and its wall-clock start and end (seconds since the epoch)."""

    method: str
    start: float
    end: float

    def overlaps(self, other: CallSpan) -> bool:
        """Whether the two calls were running at one instant."""
        return self.start < other.end and other.start < self.end


class CallLog:
    """The last `keep` calls' spans (older ones drop off, so a long run holds a bounded log)."""

    def __init__(self, keep: int = 256) -> None:
        self._spans: deque[CallSpan] = deque(maxlen=keep)

    @contextmanager
    def span(self, method: str) -> Iterator[None]:
        start = time.time()
        try:
            yield
        finally:
            self._spans.append(CallSpan(method, start, time.time()))

    def spans(self) -> list[CallSpan]:
        return list(self._spans)
