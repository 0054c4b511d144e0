"""Stopping a command on Ctrl-C or SIGTERM with nothing it started left running.

A run owns a process tree: Ray's head processes and workers, the trainer ranks, a launched SGLang/vLLM server, the
embedded sandbox server, a retrieval or environment server. Python's default Ctrl-C raises KeyboardInterrupt
wherever the main thread happens to be and SIGTERM kills the interpreter with no cleanup at all, so either can leave
that tree running (holding GPUs and ports). `run_until_signal` runs a command's coroutine so that:

- the first SIGINT or SIGTERM says what is being stopped and cancels the coroutine: its `finally` blocks close the
  rollout, the engines and their servers, the trainer ranks and Ray as on a normal exit;
- a second signal, or the cleanup outlasting `grace_s`, kills every process of the tree at once and exits;
- after a clean stop, any process of the tree still alive is stopped (SIGTERM, then SIGKILL) and named, and
  `Interrupted` is raised for the command to exit with 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psutil

from agentgym.errors import AgentGymError

T = TypeVar("T")

HANDLED = (signal.SIGINT, signal.SIGTERM)


def _say(line: str) -> None:
    """Straight to fd 2: safe inside a signal handler (print() may be mid-write in the interrupted frame)."""
    try:
        os.write(2, f"agentgym: {line}\n".encode())
    except OSError:
        pass


@dataclass(frozen=True)
class StopRequest:
    signal_name: str  # "SIGINT" or "SIGTERM"

    @property
    def exit_code(self) -> int:
        return 128 + int(signal.Signals[self.signal_name])


class Interrupted(AgentGymError):
    """The command was stopped by a signal and cleaned up after itself; exit with `exit_code`."""

    def __init__(self, request: StopRequest, what: str, leftovers: Sequence[str] = ()) -> None:
        self.request = request
        self.leftovers = list(leftovers)
        tail = ("nothing it started is left running" if not leftovers else
                f"{len(leftovers)} process(es) it started were still running and are stopped: {', '.join(leftovers)}")
        super().__init__(f"stopped by {request.signal_name}: {what} ended; {tail}")

    @property
    def exit_code(self) -> int:
        return self.request.exit_code


def descendants() -> list[psutil.Process]:
    """Every process below this one (children, their children, ...)."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.name()} (pid {proc.pid})"
    except psutil.Error:
        return f"pid {proc.pid}"


def stop_processes(procs: Sequence[psutil.Process], *, timeout_s: float = 5.0, kill_at_once: bool = False) -> list[str]:
    """SIGTERM (or, with `kill_at_once`, SIGKILL) the processes still alive, SIGKILL what outlives `timeout_s`;
    returns the ones that were alive, described."""
    alive = [p for p in procs if _running(p)]
    described = [_describe(p) for p in alive]
    for proc in alive:
        try:
            proc.kill() if kill_at_once else proc.terminate()
        except psutil.Error:
            pass
    _, remaining = psutil.wait_procs(alive, timeout=timeout_s)
    for proc in remaining:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(remaining, timeout=timeout_s)
    return described


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class SignalGuard:
    """The handlers `run_until_signal` installs for the length of a command (see the module docstring)."""

    what: str
    grace_s: float = 60.0
    request: StopRequest | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task | None = None
    _tree: list[psutil.Process] = field(default_factory=list)
    _previous: dict[int, Any] = field(default_factory=dict)
    _timer: threading.Timer | None = None

    def install(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        self._loop, self._task = loop, task
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)

    async def keep_installed(self, every_s: float = 0.5) -> None:
        """`ray.init` puts its own SIGTERM handler in the driver (it exits without any cleanup): take ours back."""
        while True:
            await asyncio.sleep(every_s)
            for sig in HANDLED:
                if signal.getsignal(sig) != self._handle:
                    signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def tree(self) -> list[psutil.Process]:
        """The processes seen when the first signal came, plus any started since (orphans reparented away from
        this process are still in the first list)."""
        seen = {p.pid: p for p in self._tree}
        for proc in descendants():
            seen.setdefault(proc.pid, proc)
        return list(seen.values())

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.request is not None:
            self.force(f"second signal ({name})")
            return
        self.request = StopRequest(name)
        self._tree = descendants()
        _say(f"{name} received: stopping {self.what} (the rollout and the servers it launched, the reward "
             f"engines, the trainer ranks and Ray); waiting up to {self.grace_s:g} s for them. "
             f"Press Ctrl-C again to kill everything at once.")
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        timer = threading.Timer(self.grace_s, self.force, args=(f"the cleanup took longer than {self.grace_s:g} s",))
        timer.daemon = True
        timer.start()
        self._timer = timer

    def force(self, reason: str) -> None:
        """Kill the whole tree now and leave (no cleanup code of this process runs after this)."""
        tree = self.tree()
        _say(f"{reason}: killing the {len(tree)} process(es) this run started and exiting")
        stop_processes(tree, timeout_s=2.0, kill_at_once=True)
        os._exit(self.request.exit_code if self.request is not None else 130)


def run_until_signal(main: Coroutine[Any, Any, T], *, what: str, grace_s: float = 60.0,
                     on_interrupt: Sequence[Callable[[], None]] = ()) -> T:
    """`asyncio.run(main)`, stopped cleanly by SIGINT/SIGTERM (module docstring). `on_interrupt`: what else to stop
    after `main` has unwound and before leftovers are reaped (process-wide servers normally stopped at exit)."""
    guard = SignalGuard(what, grace_s)

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        guard.install(asyncio.get_running_loop(), task)
        keeper = asyncio.create_task(guard.keep_installed())
        try:
            return await main
        finally:
            keeper.cancel()

    try:
        result = asyncio.run(guarded())
    except BaseException as exc:
        if guard.request is None:
            guard.uninstall()
            raise
        raise _finish(guard, on_interrupt) from (None if isinstance(exc, asyncio.CancelledError) else exc)
    if guard.request is not None:  # main swallowed the cancellation and returned
        raise _finish(guard, on_interrupt)
    guard.uninstall()
    return result


def _finish(guard: SignalGuard, on_interrupt: Sequence[Callable[[], None]]) -> Interrupted:
    assert guard.request is not None
    if guard._timer is not None:
        guard._timer.cancel()
    for stop in on_interrupt:
        try:
            stop()
        except Exception as exc:  # one stopper failing must not keep the others (and the reaping) from running
            _say(f"while stopping: {type(exc).__name__}: {exc}")
    tree = guard.tree()
    psutil.wait_procs(tree, timeout=3.0)  # processes told to stop (Ray's, a server's) finish exiting on their own
    leftovers = stop_processes(tree)
    # The guard stays installed: a signal during the interpreter's own exit still kills rather than tracebacks.
    return Interrupted(guard.request, guard.what, leftovers)


def stop_ray() -> None:
    """Stop the Ray session this process started, if it started one: an `on_interrupt` stopper for commands whose
    trainer brings Ray up itself (a CPU run that never imported ray has none to stop)."""
    if ray_is_up():
        sys.modules["ray"].shutdown()


def ray_is_up() -> bool:
    ray = sys.modules.get("ray")  # not imported yet: not initialised either (and a CPU run never imports it)
    return ray is not None and ray.is_initialized()
