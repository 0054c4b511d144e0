"""The one place agentgym makes a rich Console.

Piped or redirected, rich assumes 80 columns and cuts table cells ("scor…") and wraps lines. Output that is not
a terminal has no width to fit, so it gets a wide one (or `COLUMNS`, when set) and keeps every character.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

PIPED_WIDTH = 1000


def say(line: str) -> None:
    """One line for the person running the job, on stderr (stdout may be a table or a piped result)."""
    print(f"agentgym: {line}", file=sys.stderr, flush=True)


def make_console(**kwargs: Any) -> Console:
    console = Console(**kwargs)
    if "width" not in kwargs and not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPED_WIDTH
    return console


class StageProgress:
    """Progress of a long stage that reads well in a terminal and in a log file alike.

    In a terminal: a rich progress bar. Otherwise (output piped or redirected, where rich shows a bar only when it
    ends): one line per `every_fraction` of the work done, and a line at least every `every_s` seconds while nothing
    moves (a background heartbeat), so a log never goes quiet for minutes. `fields` (e.g. `loss="loss 0.123"`) are
    shown after the count. Use as a context manager; `update(completed, **fields)` or `advance()`.
    """

    def __init__(self, console: Console, description: str, total: int | None, *, every_fraction: float = 0.1,
                 every_s: float = 30.0, **fields: str) -> None:
        self.console = console
        self.description = description
        self.total = total
        self.completed = 0
        self.fields = dict(fields)
        self.every_fraction = every_fraction
        self.every_s = every_s
        self.lines = 0
        self._bar: Any = None
        self._task: Any = None
        self._started = 0.0
        self._last_line = 0.0
        self._last_fraction = 0.0
        self._stop: Any = None
        self._heartbeat: Any = None
        self._lock: Any = None

    def __enter__(self) -> "StageProgress":
        import threading
        import time

        self._started = self._last_line = time.monotonic()
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = [f"[bold]{self.description}", BarColumn(), MofNCompleteColumn()]
            columns += [TextColumn("{task.fields[%s]}" % name) for name in self.fields]
            self._bar = Progress(*columns, TimeElapsedColumn(), console=self.console)
            self._task = self._bar.add_task(self.description, total=self.total, **self.fields)
            self._bar.start()
            return self
        self._lock = threading.Lock()
        self._line("started")
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name=f"progress:{self.description}", daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            return
        self._stop.set()
        self._heartbeat.join()
        self._line("failed" if exc[0] is not None else "done")

    def advance(self, n: int = 1, **fields: str) -> None:
        self.update(self.completed + n, **fields)

    def update(self, completed: int, **fields: str) -> None:
        import time

        self.completed = completed
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, **fields)
            return
        fraction = completed / self.total if self.total else 0.0
        now = time.monotonic()
        if fraction - self._last_fraction >= self.every_fraction - 1e-9 or now - self._last_line >= self.every_s:
            self._last_fraction = fraction
            self._line("")

    def _beat(self) -> None:
        import time

        while not self._stop.wait(min(self.every_s, 5.0)):
            if time.monotonic() - self._last_line >= self.every_s:
                self._line("still running")

    def _line(self, note: str) -> None:
        import time

        with self._lock:
            now = time.monotonic()
            self._last_line = now
            count = f"{self.completed}/{self.total}" if self.total else str(self.completed)
            share = f" ({self.completed / self.total:.0%})" if self.total else ""
            extra = "".join(f", {v}" for v in self.fields.values() if v)
            elapsed = _clock(now - self._started)
            self.console.print(f"{self.description}: {count}{share}{extra}, {elapsed} elapsed"
                               + (f" - {note}" if note else ""), highlight=False, markup=False)
            self.lines += 1


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
