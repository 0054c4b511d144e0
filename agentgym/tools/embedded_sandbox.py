"""The sandbox server as a child process, so a fresh machine runs the code tool with no Docker and no URL to set.

One server per process and argument list, shared by every tool object that names no `sandbox_fusion_url`. A
supervisor thread owns the child: it starts it on a free loopback port, waits for the line with its URL and a
successful ping, restarts it if it dies (new port, new URL; callers always ask for the current one), and stops it
at interpreter exit. The child gets its own process group, so stopping it also ends whatever it spawned, and it
is told to die with its supervisor thread (Linux `PR_SET_PDEATHSIG`) in case this process is killed outright.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Optional, Sequence

from agentgym.errors import AgentGymError

logger = logging.getLogger(__name__)

_URL_RE = re.compile(r"https?://[\w.\-\[\]:]+(?::\d+)?")
_PR_SET_PDEATHSIG = 1


class EmbeddedSandboxError(AgentGymError):
    """The embedded sandbox server could not be started or kept running."""


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux/glibc: atexit still stops the child on a normal exit


def _ping(base_url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/v1/ping", timeout=timeout) as resp:
            return resp.status == 200 and b"pong" in resp.read()
    except OSError:
        return False


class EmbeddedSandbox:
    """A supervised `python -m sandbox_server` child on 127.0.0.1."""

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        python: str = sys.executable,
        startup_timeout: float = 60.0,
        max_quick_failures: int = 3,
    ):
        self.extra_args = tuple(extra_args)
        self.python = python
        self.startup_timeout = startup_timeout
        self.max_quick_failures = max_quick_failures
        self.starts = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._gave_up = threading.Event()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._proc: Optional[subprocess.Popen] = None
        self._url: Optional[str] = None
        self._last_error: Optional[str] = None
        self._output: collections.deque[str] = collections.deque(maxlen=200)

    # --- what callers use -------------------------------------------------------------------------------------
    def url(self, timeout: Optional[float] = None) -> str:
        """The base URL of a running server; starts (or restarts) it if needed and waits until it answers."""
        timeout = self.startup_timeout if timeout is None else timeout
        self._ensure_supervisor()
        deadline = time.monotonic() + timeout
        while True:
            if self._ready.is_set():
                url = self._url
                if url is not None:
                    return url
            if self._gave_up.is_set():
                raise EmbeddedSandboxError(self._failure_text())
            left = deadline - time.monotonic()
            if left <= 0:
                raise EmbeddedSandboxError(
                    f"the embedded sandbox server was not ready within {timeout:g} s. {self._failure_text()}"
                )
            self._ready.wait(min(left, 0.2))

    async def aurl(self, timeout: Optional[float] = None) -> str:
        url = self._url
        if self._ready.is_set() and url is not None and self._proc is not None and self._proc.poll() is None:
            return url
        return await asyncio.to_thread(self.url, timeout)

    @property
    def pid(self) -> Optional[int]:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server and its supervisor; a later `url()` starts a new one."""
        with self._lock:
            self._stopping = True
            thread = self._thread
            proc = self._proc
        if proc is not None:
            _terminate_group(proc, timeout)
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            self._thread = None
            self._stopping = False
            self._ready.clear()

    # --- supervision -----------------------------------------------------------------------------------------
    def _ensure_supervisor(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._gave_up.clear()
            self._thread = threading.Thread(target=self._supervise, name="agentgym-embedded-sandbox", daemon=True)
            self._thread.start()

    def _supervise(self) -> None:
        quick_failures = 0
        while not self._stopping:
            started_at = time.monotonic()
            ok = self._start_once()
            if ok:
                proc = self._proc
                assert proc is not None
                code = proc.wait()
                self._ready.clear()
                if self._stopping:
                    break
                _terminate_group(proc, 1.0)  # its children, if it left any
                self._last_error = f"the sandbox server (pid {proc.pid}) exited with code {code}"
                logger.warning("%s; restarting it. Last output:\n%s", self._last_error, self._output_tail(20))
            if time.monotonic() - started_at < 5.0:
                quick_failures += 1
                if quick_failures >= self.max_quick_failures:
                    self._gave_up.set()
                    logger.error("giving up on the embedded sandbox server: %s", self._failure_text())
                    return
                time.sleep(0.2 * 2**quick_failures)
            else:
                quick_failures = 0

    def _start_once(self) -> bool:
        # Port 0: the server binds a free port itself and prints it, so no other process can take it in between.
        cmd = [self.python, "-m", "sandbox_server", "--host", "127.0.0.1", "--port", "0", *self.extra_args]
        self._output.clear()
        self._url = None
        with self._lock:
            if self._stopping:
                return False
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    bufsize=1,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                self._last_error = f"could not run {' '.join(cmd)!r}: {exc}"
                return False
            self._proc = proc
            self.starts += 1
        announced = threading.Event()
        url_box: list[str] = []
        threading.Thread(
            target=self._drain, args=(proc, announced, url_box), name="agentgym-embedded-sandbox-output", daemon=True
        ).start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and not self._stopping:
            if proc.poll() is not None:
                self._last_error = f"`{' '.join(cmd)}` exited with code {proc.returncode} before it was ready"
                return False
            if announced.wait(0.05):
                url = url_box[0].rstrip("/")
                if _ping(url, timeout=2.0):
                    self._url = url
                    self._last_error = None
                    self._ready.set()
                    logger.info("embedded sandbox server ready at %s (pid %d)", url, proc.pid)
                    return True
        if not self._stopping:
            self._last_error = (
                f"`{' '.join(cmd)}` did not print its URL and answer /v1/ping within {self.startup_timeout:g} s"
            )
        _terminate_group(proc, 2.0)
        return False

    def _drain(self, proc: subprocess.Popen, announced: threading.Event, url_box: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._output.append(line.rstrip("\n"))
            if not announced.is_set():
                m = _URL_RE.search(line)
                if m:
                    url_box.append(m.group(0))
                    announced.set()
        proc.stdout.close()

    def _output_tail(self, n: int) -> str:
        return "\n".join(list(self._output)[-n:]) or "(no output)"

    def _failure_text(self) -> str:
        why = self._last_error or "it did not start"
        return (
            f"Embedded sandbox server: {why}. Its last output:\n{self._output_tail(30)}\n"
            "Fix the cause shown above, or set sandbox_fusion_url to a running sandbox server."
        )


def _terminate_group(proc: subprocess.Popen, timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(wait)
            if sig == signal.SIGTERM:
                # The leader is gone; make sure nothing else of the group lingers.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            return
        except subprocess.TimeoutExpired:
            continue


class _ProcessSandboxes:
    """The embedded servers of this process, one per argument list, stopped at interpreter exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[tuple[str, ...], EmbeddedSandbox] = {}
        atexit.register(self.stop_all)

    def get(self, extra_args: Sequence[str] = (), startup_timeout: float = 60.0) -> EmbeddedSandbox:
        key = tuple(extra_args)
        with self._lock:
            server = self._servers.get(key)
            if server is None:
                server = self._servers[key] = EmbeddedSandbox(key, startup_timeout=startup_timeout)
            return server

    def stop_all(self) -> None:
        with self._lock:
            servers = list(self._servers.values())
        for s in servers:
            s.stop()


PROCESS_SANDBOXES = _ProcessSandboxes()
"""Module-level on purpose: one server per process is the point of the embedded default."""


def shared_embedded_sandbox(extra_args: Sequence[str] = (), startup_timeout: float = 60.0) -> EmbeddedSandbox:
    return PROCESS_SANDBOXES.get(extra_args, startup_timeout)


def stop_embedded_sandboxes() -> None:
    """Stop this process's embedded servers now (they are otherwise stopped at interpreter exit): an interrupted
    command stops them before it checks that nothing it started is left running."""
    PROCESS_SANDBOXES.stop_all()
