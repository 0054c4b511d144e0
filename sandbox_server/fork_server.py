"""Warm runs that scale with load: a pre-imported python fork server inside one template sandbox.

Starting a bubblewrap sandbox and a fresh interpreter costs tens of milliseconds of CPU per run, so a
pool of such sandboxes cannot be refilled as fast as runs arrive under load. Here the expensive part
happens once: a template sandbox (the usual layout, uid and read-only root) runs the fork server of
zygote.py. Each run is a fork of it with its own mount/pid/net/ipc/uts/cgroup namespaces, fresh tmpfs
work dir, /tmp and /dev/shm, its own cgroup, and no capabilities; python code runs in the forked,
already-initialised interpreter, other languages exec their runtime. A few such runs are prepared ahead
(namespaces built, cgroup joined) and refilled in the background; preparing one costs about a millisecond
or two of CPU, so the pool keeps up with the admission limit.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from .cgroups import RunCgroup
from .phases import PhaseTimes
from .isolation import BwrapRunner, StepResult, cpu_limit_s
from .process import ProcessOutcome, Spawned, _OutputBudget, own_stdio
from .workdirs import WorkDirs, remove_tree
from .zygote import zygote_source

logger = logging.getLogger("sandbox_server.fork_server")

_CREDS = struct.Struct("3i")
_TEMPLATE_CPU_S = 10**7  # the fork server lives long; each run gets its own CPU limit


class ForkServerError(RuntimeError):
    """The fork server could not prepare or finish a run."""


async def _wait_fd(fd: int, writable: bool = False) -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    add(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        remove(fd)


async def _recvmsg(sock: socket.socket, nfds: int = 0) -> tuple[bytes, list[int], Optional[int]]:
    """One message, the fds it carries and the sender's pid in our pid namespace (SO_PASSCRED)."""
    anc = socket.CMSG_SPACE(_CREDS.size) + (socket.CMSG_SPACE(4 * nfds) if nfds else 0)
    while True:
        try:
            msg, ancdata, _, _ = sock.recvmsg(1 << 16, anc)
            break
        except BlockingIOError:
            await _wait_fd(sock.fileno())
    fds: list[int] = []
    pid = None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += list(struct.unpack(f"{len(data) // 4}i", data[:len(data) - len(data) % 4]))
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = _CREDS.unpack(data[:_CREDS.size])[0]
    return msg, fds, pid


async def _sendmsg(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
    while True:
        try:
            sock.sendmsg([data], anc)
            return
        except BlockingIOError:
            await _wait_fd(sock.fileno(), writable=True)


async def _exit_status(sock: socket.socket, init_pid: int) -> tuple[Optional[int], dict[str, float]]:
    """The keeper's exit status of the run (None if the sandbox went away) and the init's phase timestamps.

    Only the keeper may report the status: a message from the init's pid is read for its timestamps alone."""
    times: dict[str, float] = {}
    while True:
        msg, fds, pid = await _recvmsg(sock)
        for fd in fds:
            os.close(fd)
        if not msg:
            return None, times
        try:
            body = json.loads(msg)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        if pid == init_pid:
            reported = body.get("times")
            if isinstance(reported, dict):
                times.update({k: float(v) for k, v in reported.items() if isinstance(v, (int, float))})
            continue
        if isinstance(body.get("rc"), int):
            if isinstance(body.get("init_exited"), (int, float)):
                times["init_exited"] = float(body["init_exited"])
            return body["rc"], times


InputFile = tuple  # (relative path, bytes) or (relative path, bytes, mode): a mode sets the file's exec bits


def _inputs_blob(files: Sequence[InputFile]) -> int:
    """A memfd with the run's input files, in the layout zygote_main.py's _write_inputs reads."""
    index = json.dumps([[f[0], len(f[1]), *f[2:3]] for f in files]).encode()
    fd = os.memfd_create("sandbox-inputs")
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(struct.pack("<Q", len(index)))
            f.write(index)
            for entry in files:
                f.write(entry[1])
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fetched(fd: int, index: list) -> tuple[dict[str, bytes], dict[str, int]]:
    """The keeper's answer: contents by path, and each file's mode bits."""
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    with os.fdopen(fd, "rb") as f:
        for rel, size, *mode in index:
            files[rel] = f.read(size)
            modes[rel] = int(mode[0]) if mode else 0o644
    return files, modes


class _PipeSink:
    """Reads a run's stdout or stderr pipe into `sink` under the output budget with a bare reader callback: a
    transport + StreamReader + task per pipe cost more server CPU than a print(1) run itself."""

    def __init__(self, fd: int, sink: bytearray, budget: _OutputBudget):
        self.loop = asyncio.get_running_loop()
        self.fd, self.sink, self.budget = fd, sink, budget
        self.done = self.loop.create_future()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if chunk:
            self.budget.take(chunk, self.sink)
        else:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if not self.done.done():
            self.done.set_result(None)


async def _feed_pipe(fd: int, data: bytes) -> None:
    """Write stdin and close it; a program that exits without reading it all is not an error."""
    view = memoryview(data)
    try:
        while view:
            try:
                view = view[os.write(fd, view):]
            except (BlockingIOError, InterruptedError):
                await _wait_fd(fd, writable=True)
    except OSError:  # EPIPE: the program closed its stdin
        pass
    finally:
        os.close(fd)


def _start_feed(fd: int, data: Optional[bytes]) -> Optional[asyncio.Future]:
    """stdin that fits in the pipe is written at once, without a task; None when nothing is left to write."""
    if not data:
        os.close(fd)
        return None
    os.set_blocking(fd, False)
    try:
        written = os.write(fd, data)
    except (BlockingIOError, InterruptedError):
        written = 0
    except OSError:
        os.close(fd)
        return None
    if written == len(data):
        os.close(fd)
        return None
    return asyncio.ensure_future(_feed_pipe(fd, data[written:]))


def _phases(t_start: float, t_sent: float, times: Mapping[str, float], t_status: float, t_end: float
            ) -> dict[str, float]:
    """Phase durations of one run from the server's and the sandbox's CLOCK_MONOTONIC timestamps."""
    out = {"arm": t_sent - t_start, "collect": t_end - t_status}
    marks = [("to_init", t_sent, times.get("go")), ("init_setup", times.get("go"), times.get("forked")),
             ("program", times.get("forked"), times.get("reaped")),
             ("init_exit", times.get("reaped"), times.get("init_exited")),
             ("to_server", times.get("init_exited"), t_status)]
    for name, a, b in marks:
        if a is not None and b is not None:
            out[name] = b - a
    return out


@dataclass
class ForkedSandbox:
    """A prepared run: namespaces built, its init in `cg` and waiting for the program."""

    sock: socket.socket
    stdin_w: int
    stdout_r: int
    stderr_r: int
    cg: RunCgroup
    pid: int
    closed: bool = field(default=False)

    def alive(self) -> bool:
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def close_fds(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
            for fd in (self.stdin_w, self.stdout_r, self.stderr_r):
                if fd >= 0:
                    os.close(fd)


@dataclass
class ForkedResult:
    step: StepResult
    files: dict[str, bytes]
    notes: list[str]
    modes: dict[str, int] = field(default_factory=dict)


@dataclass
class _RunEnd:
    """How a forked run ended: the init's status, the sandbox's timestamps, and whether the wall clock ran out."""

    rc: int
    times: dict[str, float]
    timed_out: bool
    elapsed: float
    t_status: float


class _RunIO:
    """A run's stdout/stderr sinks and stdin feed, under one output budget."""

    def __init__(self, budget: _OutputBudget):
        self.budget = budget
        self.out, self.err = bytearray(), bytearray()
        self.sinks: list[_PipeSink] = []
        self.tasks: list[asyncio.Future] = []
        self.killed = False  # every process of the run has been SIGKILLed

    def attach(self, sandbox: ForkedSandbox, stdin: Optional[bytes]) -> None:
        """Take over the sandbox's pipe ends: read stdout/stderr, write stdin (at once when it fits the pipe)."""
        for fd, sink in ((sandbox.stdout_r, self.out), (sandbox.stderr_r, self.err)):
            self.sinks.append(_PipeSink(fd, sink, self.budget))
        sandbox.stdout_r = sandbox.stderr_r = -1  # owned by the sinks now
        feed = _start_feed(sandbox.stdin_w, stdin)
        sandbox.stdin_w = -1
        self.tasks = [s.done for s in self.sinks] + ([feed] if feed is not None else [])

    async def drain(self) -> None:
        """After the kill every writer is dead, so the pipes reach EOF promptly; the bound guards against leaks."""
        _, pending = await asyncio.wait(self.tasks, timeout=2) if self.tasks else (set(), set())
        for t in pending:
            t.cancel()
        for sink in self.sinks:
            sink.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for sink in self.sinks:
            sink.close()


class ForkServer:
    """One template sandbox with the fork server, and `size` runs prepared ahead, refilled off the request path."""

    def __init__(self, runner: BwrapRunner, workdirs: WorkDirs, env: Mapping[str, str], *, size: int,
                 idle_memory_bytes: int, template_memory_bytes: int, template_pids: int,
                 template_argv: Optional[Callable[[int], list[str]]] = None):
        self.runner = runner
        self.settings = runner.settings
        self.workdirs = workdirs
        self.env = dict(env)
        self.size = size
        self.idle_memory_bytes = idle_memory_bytes
        self.template_memory_bytes = template_memory_bytes
        self.template_pids = template_pids
        # The template's command given the fd of its socket to the server; default: zygote_main.py on python's
        # stdin. node_zygote.py's speaks the same protocol.
        self.template_argv = template_argv
        self._ready: collections.deque[ForkedSandbox] = collections.deque()
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._pending = 0
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self._zsock: Optional[socket.socket] = None
        self._template: Optional[Spawned] = None
        self._template_cg: Optional[RunCgroup] = None
        self._template_dir: Optional[Path] = None
        self._watcher: Optional[asyncio.Task] = None
        self._failures = 0
        self.phases = PhaseTimes()
        self.reserve = max(2, min(size // 2, os.cpu_count() or 1))
        self._refill_owed = False

    # ---- template life cycle
    async def start(self) -> None:
        """Start the template and fill the pool; raises ForkServerError if the template cannot serve a run."""
        await self._start_template()
        sandbox = await self._prepare()  # proves the whole chain works before any request relies on it
        self._ready.append(sandbox)
        self._top_up()

    async def _start_template(self) -> None:
        host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._template_dir = self.workdirs.create(f"warm-template-{uuid.uuid4().hex}")
        self.runner.prepare_workdir(self._template_dir)
        self._template_cg = self.runner.cgroups.create(f"template-{uuid.uuid4().hex}", self.template_memory_bytes,
                                                       self.template_pids)
        try:
            argv = (self.template_argv(child.fileno()) if self.template_argv is not None
                    else ["python3", "-", str(child.fileno())])
            self._template = await self.runner.start(
                argv, workdir=self._template_dir, env=self.env,
                cg=self._template_cg, timeout=_TEMPLATE_CPU_S, extra_fds=[child.fileno()], cap_add=True)
            stdin = self._template.proc.stdin
            assert stdin is not None
            if self.template_argv is None:
                stdin.write(zygote_source().encode())
                await stdin.drain()
            stdin.close()
        except BaseException:
            host.close()
            raise
        finally:
            child.close()
        host.setblocking(False)
        self._zsock = host
        self._watcher = asyncio.get_running_loop().create_task(self._watch(self._template))

    async def _watch(self, template: Spawned) -> None:
        rc = await template.proc.wait()
        if self._closed or template is not self._template:
            return
        err = bytes(template.err).decode(errors="replace").strip()[-2000:]
        logger.warning("sandbox fork server exited (rc %s); restarting it. stderr: %s", rc, err or "(empty)")
        await self._stop_template()
        await asyncio.sleep(min(5.0, 0.1 * 2 ** min(self._failures, 6)))
        self._failures += 1
        if not self._closed:
            try:
                await self._start_template()
                self._top_up()
            except Exception:
                logger.exception("could not restart the sandbox fork server")

    async def _stop_template(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        while self._ready:
            await self.discard(self._ready.popleft())
        if self._zsock is not None:
            self._zsock.close()
            self._zsock = None
        template, cg, workdir = self._template, self._template_cg, self._template_dir
        self._template = self._template_cg = self._template_dir = None
        if template is not None and cg is not None:
            await template.discard(lambda pid: cg.kill_all())
        if cg is not None:
            await cg.remove()
        if workdir is not None:
            await asyncio.to_thread(remove_tree, workdir)

    # ---- pool
    async def acquire(self, wait_s: float = 10.0) -> Optional[ForkedSandbox]:
        """A prepared run; when none is ready, waits for the next one (preparing takes milliseconds, far less
        than a cold sandbox). None when the fork server is down or `wait_s` passed: the caller then runs cold."""
        ready = self._pop_ready()
        if ready is not None:
            return ready
        if self._closed or self._zsock is None:
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._top_up()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout=wait_s)
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                self._hand_over(waiter.result())  # the request went away; the next one gets it
            waiter.cancel()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if waiter.done() and not waiter.cancelled():
            return waiter.result()
        waiter.cancel()
        return None

    def take_ready(self) -> Optional[ForkedSandbox]:
        """A prepared run if one is ready now, else None (and more are prepared); never waits."""
        ready = self._pop_ready()
        if ready is None:
            self._top_up()
        return ready

    def _pop_ready(self) -> Optional[ForkedSandbox]:
        """The first prepared run that is still alive (the dead ones are discarded), and more are prepared; None
        when none is."""
        while self._ready:
            candidate = self._ready.popleft()
            if candidate.alive():
                self._top_up(defer=True)
                return candidate
            self._spawn(self.discard(candidate))
        return None

    def _hand_over(self, sandbox: ForkedSandbox) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(sandbox)
                return
        self._ready.append(sandbox)

    def pool_state(self) -> dict[str, int]:
        return {"ready": len(self._ready), "preparing": self._pending, "size": self.size, "reserve": self.reserve}

    def _top_up(self, defer: bool = False) -> None:
        """Start preparing runs up to `size` (+ one per waiting request). With `defer`, while `reserve` runs are
        still ready, the refill waits until a run finishes: preparing costs server CPU, which would otherwise
        land on the request that just took a run, between its arrival and its answer."""
        if self._closed or self._zsock is None:
            return
        if defer and len(self._ready) >= self.reserve and not self._waiters:
            self._refill_owed = True
            return
        want = self.size + len(self._waiters)
        for _ in range(max(0, want - len(self._ready) - self._pending)):
            self._pending += 1
            self._spawn(self._refill())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refill(self) -> None:
        try:
            sandbox = await self._prepare()
        except Exception as e:
            if not self._closed and self._zsock is not None:
                logger.warning("could not prepare a forked sandbox: %s", e)
            while self._waiters:  # one waiting request goes the cold way instead of waiting on
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break
            return
        finally:
            self._pending -= 1
        if self._closed:
            await self.discard(sandbox)
        else:
            self._hand_over(sandbox)
            self._failures = 0

    async def _prepare(self) -> ForkedSandbox:
        zsock = self._zsock
        if zsock is None:
            raise ForkServerError("the fork server is not running")
        host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        host.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        host.setblocking(False)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        keep = [in_w, out_r, err_r]
        try:
            own_stdio(self.settings.sandbox_uid, self.settings.sandbox_gid, (in_r, out_w, err_w))
            header = {"workspace_size": self.workdirs.size_bytes, "tmp_size": self.settings.tmp_size_mb << 20,
                      "cpu": cpu_limit_s(self.settings.max_timeout_s)}
            try:
                await _sendmsg(zsock, json.dumps(header).encode(), [in_r, out_w, err_w, child.fileno()])
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
                child.close()
            msg, _, pid = await asyncio.wait_for(_recvmsg(host), timeout=30)
            if msg != b"ready" or pid is None or pid <= 0:
                raise ForkServerError(f"the fork server's run did not start (got {msg!r})")
            cg = self.runner.new_cgroup(self.idle_memory_bytes)
            try:
                for path in cg.join_files:
                    with open(path, "w") as f:
                        f.write(str(pid))
            except BaseException:
                await cg.kill_all()
                await cg.remove()
                raise
        except BaseException:
            host.close()
            for fd in keep:
                os.close(fd)
            raise
        return ForkedSandbox(host, in_w, out_r, err_r, cg, pid)

    async def discard(self, sandbox: ForkedSandbox) -> None:
        await sandbox.cg.kill_all()
        sandbox.close_fds()
        await sandbox.cg.remove()

    # ---- one run
    async def run(self, sandbox: ForkedSandbox, *, spec: dict, inputs: Sequence[InputFile],
                  stdin: Optional[bytes], timeout: float, memory_bytes: int, fetch: Sequence[str],
                  fetch_budget: int, fetch_all: bool = False) -> ForkedResult:
        """Run `spec` (zygote_main.py: `source`+`args` for in-process python, or `argv`; `env`) in a prepared
        sandbox: arm its limits, wire its stdio, send the program, wait (then kill the whole run), fetch files
        (`fetch`, or with `fetch_all` every file of the work dir: what a compile step produced)."""
        t_start = time.monotonic()
        io = _RunIO(_OutputBudget(self.settings.max_output_bytes, self.settings.output_kill_bytes))
        try:
            cpu_before = self.runner.arm(sandbox.cg, memory_bytes=memory_bytes)
            io.attach(sandbox, stdin)
            t_sent = await self._send_program(sandbox, spec, inputs, timeout)
            ended = await self._wait_then_kill(sandbox, io, timeout)
            files, modes, notes = ({}, {}, []) if not (fetch or fetch_all) else \
                await self._fetch_files(sandbox, fetch, fetch_budget, fetch_all)
            step = self._step_result(sandbox.cg, io, ended, cpu_before)
            self.phases.add(_phases(t_start, t_sent, ended.times, ended.t_status, time.monotonic()))
            return ForkedResult(step, files, notes, modes)
        finally:
            await self._release(sandbox, io)

    async def _send_program(self, sandbox: ForkedSandbox, spec: dict, inputs: Sequence[InputFile],
                            timeout: float) -> float:
        """The "go" message: the spec with the run's CPU limit, and its input files in a memfd. Returns when sent."""
        blob = _inputs_blob(inputs)
        t_sent = time.monotonic()
        try:
            await _sendmsg(sandbox.sock, json.dumps({**spec, "cpu": cpu_limit_s(timeout)}).encode(), [blob])
        except OSError as e:
            raise ForkServerError(f"the prepared sandbox is gone ({e})") from e
        finally:
            os.close(blob)
        return t_sent

    async def _wait_then_kill(self, sandbox: ForkedSandbox, io: "_RunIO", timeout: float) -> "_RunEnd":
        """Wait for the exit status, the timeout or an output flood; then kill every process of the run (on every
        path, cancellation included) and drain its output. Raises ForkServerError if no status came."""
        start = time.monotonic()
        done = asyncio.create_task(_exit_status(sandbox.sock, sandbox.pid))
        flood = asyncio.create_task(io.budget.exceeded.wait())
        timed_out = False
        try:
            finished, _ = await asyncio.wait({done, flood}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if done not in finished:
                timed_out = not io.budget.exceeded.is_set()
            elapsed = time.monotonic() - start
        finally:
            flood.cancel()
            await sandbox.cg.kill_all()
            io.killed = True
            try:
                rc, times = await asyncio.wait_for(asyncio.shield(done), timeout=5)
            except (asyncio.TimeoutError, OSError):
                done.cancel()
                rc, times = None, {}
            t_status = time.monotonic()
            await io.drain()
        if rc is None:
            raise ForkServerError("the forked sandbox ended without reporting the run's exit status")
        return _RunEnd(rc, times, timed_out, elapsed, t_status)

    async def _fetch_files(self, sandbox: ForkedSandbox, fetch: Sequence[str], budget: int, fetch_all: bool
                           ) -> tuple[dict[str, bytes], dict[str, int], list[str]]:
        """Ask the keeper (the run is dead by now) for `fetch` (or all files); it answers with a memfd of their
        contents."""
        await _sendmsg(sandbox.sock, json.dumps({"fetch": list(fetch), "budget": budget, "all": fetch_all}).encode())
        reply, fds, _ = await asyncio.wait_for(_recvmsg(sandbox.sock, 1), timeout=30)
        if not reply or not fds:
            raise ForkServerError("the forked sandbox did not return fetch_files")
        answer = json.loads(reply)
        files, modes = await asyncio.to_thread(_read_fetched, fds[0], answer["files"])
        return files, modes, answer["notes"]

    @staticmethod
    def _step_result(cg: RunCgroup, io: "_RunIO", ended: "_RunEnd", cpu_before: float) -> StepResult:
        """The run's outcome and its cgroup's counters (CPU since `arm`, OOM kills, peak memory, pids refusals)."""
        outcome = ProcessOutcome(
            return_code=None if ended.timed_out else ended.rc, timed_out=ended.timed_out,
            execution_time=ended.elapsed, stdout=bytes(io.out), stderr=bytes(io.err),
            output_truncated=io.budget.truncated,
            output_limit_killed=io.budget.exceeded.is_set() and not ended.timed_out)
        cpu = cg.cpu_time_s()
        return StepResult(outcome, cpu_time=None if cpu is None else max(0.0, cpu - cpu_before),
                          oom_killed=cg.oom_kills() > 0, peak_memory_bytes=cg.peak_memory_bytes(),
                          pids_limit_hits=cg.pids_limit_hits())

    async def _release(self, sandbox: ForkedSandbox, io: "_RunIO") -> None:
        """Whatever happened: stop reading, kill the run if that has not happened yet, free its fds and cgroup."""
        io.close()
        if not io.killed:
            await sandbox.cg.kill_all()
        sandbox.close_fds()
        self.runner.remove_later(sandbox.cg)
        if self._refill_owed:  # runs after this request's answer is written (the task yields only then)
            self._refill_owed = False
            asyncio.get_running_loop().call_soon(self._top_up)

    async def aclose(self) -> None:
        self._closed = True
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._stop_template()
        if self._watcher is not None:
            await asyncio.gather(self._watcher, return_exceptions=True)
