"""The real sandbox server as a child process the tests start, kill and restart (on the same port)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Mapping, Optional, Sequence


class SandboxProcess:
    def __init__(self, *args: str, env: Optional[Mapping[str, str]] = None):
        self.args: Sequence[str] = args
        self.env = None if env is None else {**os.environ, **env}
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "SandboxProcess":
        cmd = [sys.executable, "-m", "sandbox_server", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        deadline = time.monotonic() + timeout
        while True:  # the old socket of a killed server can linger for a moment
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=self.env
            )
            lines = []
            for line in self.proc.stdout:
                lines.append(line)
                m = re.search(r"ready at http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    return self
            self.proc.wait()
            if time.monotonic() > deadline:
                raise RuntimeError(f"sandbox server did not start: {''.join(lines)}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL to the server and every run it has going: as if the machine took it away."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
