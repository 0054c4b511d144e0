"""Start the retrieval server in a child process and wait until it answers: for tests, benchmarks and
training scripts that need a server for the length of a run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

_READY = re.compile(r"retrieval_server ready at (http://\S+)")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it dies, even by SIGKILL, so no server outlives a
    killed training run."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RetrievalServerProcess:
    """`with RetrievalServerProcess(corpus) as server: server.retrieve_url` -> http://127.0.0.1:PORT/retrieve."""

    def __init__(self, corpus: str | Path, *, index: Optional[str | Path] = None, host: str = "127.0.0.1",
                 port: int = 0, extra_args: Sequence[str] = (), startup_timeout: float = 300.0):
        self.args = [sys.executable, "-m", "retrieval_server", "--corpus", str(corpus), "--host", host,
                     "--port", str(port), *extra_args]
        if index is not None:
            self.args += ["--index", str(index)]
        self.startup_timeout = startup_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.base_url: Optional[str] = None
        self.log: list[str] = []

    @property
    def retrieve_url(self) -> str:
        assert self.base_url, "the server is not started"
        return f"{self.base_url}/retrieve"

    def start(self) -> "RetrievalServerProcess":
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        found = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                self.log.append(line.rstrip())
                match = _READY.search(line)
                if match and not found.is_set():
                    self.base_url = match.group(1)
                    found.set()
            found.set()

        threading.Thread(target=pump, daemon=True, name="retrieval-server-log").start()
        deadline = time.monotonic() + self.startup_timeout
        while not found.wait(0.1):
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"retrieval server not ready after {self.startup_timeout:.0f}s: "
                                   + " | ".join(self.log[-5:]))
        if self.base_url is None:
            code = self.proc.wait()
            raise RuntimeError(f"retrieval server exited with code {code}: " + " | ".join(self.log[-5:]))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "RetrievalServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
