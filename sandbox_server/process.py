"""Run one child process with concurrent stdin/stdout/stderr handling, an output cap and a wall-clock limit."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, Optional, Sequence

_CHUNK = 64 * 1024


@dataclass
class ProcessOutcome:
    return_code: Optional[int]
    timed_out: bool
    execution_time: float
    stdout: bytes
    stderr: bytes
    output_truncated: bool
    output_limit_killed: bool


def _kill(pid: int) -> None:
    """SIGKILL our own child by pid. Not Popen.kill/send_signal: they poll() first, which may reap the child
    behind asyncio's child watcher (logged as "Unknown child process pid ..."). An unreaped child's pid
    cannot be reused, so this never hits another process."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _OutputBudget:
    """Keeps up to `keep` bytes per stream and signals when the total passes `kill_after`."""

    def __init__(self, keep: int, kill_after: int):
        self.keep = keep
        self.kill_after = kill_after
        self.total = 0
        self.truncated = False
        self.exceeded = asyncio.Event()

    async def drain(self, stream: Optional[asyncio.StreamReader], sink: bytearray) -> None:
        if stream is None:
            return
        while chunk := await stream.read(_CHUNK):
            self.take(chunk, sink)

    def take(self, chunk: bytes, sink: bytearray) -> None:
        self.total += len(chunk)
        room = self.keep - len(sink)
        if room > 0:
            sink.extend(chunk[:room])
        if len(chunk) > max(room, 0):
            self.truncated = True
        if self.total > self.kill_after:
            self.exceeded.set()


async def _feed(stream: Optional[asyncio.StreamWriter], prefix: bytes, data: Optional[bytes]) -> None:
    if stream is None:
        return
    try:
        if prefix:
            stream.write(prefix)
        if data:
            stream.write(data)
        await stream.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        try:
            stream.close()
        except (BrokenPipeError, ConnectionResetError):
            pass


class Spawned:
    """A started child whose stdout/stderr are already being drained; stdin stays open until `supervise`."""

    def __init__(self, proc: asyncio.subprocess.Process, budget: _OutputBudget):
        self.proc = proc
        self.budget = budget
        self.out, self.err = bytearray(), bytearray()
        self.readers = [asyncio.create_task(budget.drain(proc.stdout, self.out)),
                        asyncio.create_task(budget.drain(proc.stderr, self.err))]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release_gate(self) -> None:
        """Let a gated child (see `spawn`) go on; its stdin remains open."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")

    async def discard(self, kill_tree: Callable[[int], Awaitable[None]]) -> None:
        await kill_tree(self.proc.pid)
        _kill(self.proc.pid)
        await self.proc.wait()
        for t in self.readers:
            t.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)


def own_stdio(uid: int, gid: int, fds: Sequence[int]) -> None:
    """Give the run's stdio pipes to the sandbox uid: programs that reopen `/dev/stdin` or `/dev/stdout` (e.g.
    node's `readFileSync("/dev/stdin")`) open the pipe anew, which a root-owned 0600 pipe refuses."""
    for fd in fds:
        os.fchown(fd, uid, gid)


def _pipe_fds(proc: asyncio.subprocess.Process) -> list[int]:
    fds = []
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
        pipe = transport.get_extra_info("pipe") if transport is not None else None
        if pipe is not None:
            fds.append(pipe.fileno())
    return fds


async def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Optional[str],
    max_output_bytes: int,
    output_kill_bytes: int,
    preexec_fn: Optional[Callable[[], None]] = None,
    new_session: bool = False,
    gate: Optional[Callable[[int], None]] = None,
    pass_fds: Sequence[int] = (),
    pipe_owner: Optional[tuple[int, int]] = None,
) -> Spawned:
    """Start `argv` with all three pipes.

    With `gate`, the child must first read one line from stdin before doing anything: `gate(pid)` runs
    in between (e.g. to place the child in its cgroup and set its rlimits) and then the line is sent.
    This avoids preexec_fn, which forces a slow fork() of the whole server.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(env), cwd=cwd, preexec_fn=preexec_fn, start_new_session=new_session, close_fds=True,
        pass_fds=tuple(pass_fds))
    spawned = Spawned(proc, _OutputBudget(max_output_bytes, output_kill_bytes))
    if gate is not None:
        try:
            if pipe_owner is not None:
                own_stdio(*pipe_owner, _pipe_fds(proc))
            gate(proc.pid)
        except BaseException:
            _kill(proc.pid)
            await proc.wait()
            raise
        spawned.release_gate()
    return spawned


async def supervise(
    spawned: Spawned,
    *,
    stdin: Optional[bytes],
    timeout: float,
    kill_tree: Callable[[int], Awaitable[None]],
    prefix: bytes = b"",
) -> ProcessOutcome:
    """Feed stdin, wait for exit or timeout or output flood, then kill the whole tree and collect output.

    `kill_tree(pid)` must kill every process the child started (it is called on every exit path).
    """
    proc, budget = spawned.proc, spawned.budget
    start = time.monotonic()
    feeder = asyncio.create_task(_feed(proc.stdin, prefix, stdin))
    io_tasks = [feeder, *spawned.readers]
    waiter = asyncio.create_task(proc.wait())
    flood = asyncio.create_task(budget.exceeded.wait())
    timed_out = False
    try:
        done, _ = await asyncio.wait({waiter, flood}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            timed_out = not budget.exceeded.is_set()
        elapsed = time.monotonic() - start
    finally:
        flood.cancel()
        await kill_tree(proc.pid)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=5)
        except asyncio.TimeoutError:
            _kill(proc.pid)
            await waiter
        # Every writer is dead now, so the pipes reach EOF promptly; the bound guards against leaks.
        _, pending = await asyncio.wait(io_tasks, timeout=2)
        for t in pending:
            t.cancel()
        await asyncio.gather(*io_tasks, return_exceptions=True)
    return ProcessOutcome(
        return_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        execution_time=elapsed,
        stdout=bytes(spawned.out),
        stderr=bytes(spawned.err),
        output_truncated=budget.truncated,
        output_limit_killed=budget.exceeded.is_set() and not timed_out,
    )


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Optional[str],
    stdin: Optional[bytes],
    timeout: float,
    max_output_bytes: int,
    output_kill_bytes: int,
    preexec_fn: Optional[Callable[[], None]],
    kill_tree: Callable[[int], Awaitable[None]],
    new_session: bool = False,
    gate: Optional[Callable[[int], None]] = None,
) -> ProcessOutcome:
    spawned = await spawn(argv, env=env, cwd=cwd, max_output_bytes=max_output_bytes,
                          output_kill_bytes=output_kill_bytes, preexec_fn=preexec_fn, new_session=new_session,
                          gate=gate)
    return await supervise(spawned, stdin=stdin, timeout=timeout, kill_tree=kill_tree)


def kill_process_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
