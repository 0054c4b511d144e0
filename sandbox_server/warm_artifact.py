"""What every "built once at start" warm runtime shares (pch.py's precompiled headers, ts_snapshot.py's tsc snapshot,
jvm_cds.py's javac archive): a host directory that every sandbox binds read-only, whose files a server builds in the
background, once per host, and a record of how that went for `GET /v1/stats`.

Why it is safe to share: the directory and its files are root's (0755 and 0644: the sandbox uid must read them to
bind and map them, never write them), each file is written under a temporary name and renamed into place whole, so
a compile sees all of it or none of it, and nothing of a request ever reaches it (the builds run the server's own
fixed inputs). Why a lock: several servers on one host (a compose-scaled service, the test suite) share the
directory; they take turns through a lock file in it, and a later one finds the files built and only reuses them.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Optional, Sequence


def bindable_dir(base: Path, name: str) -> Path:
    """`base/name`, made where missing, with both 0755: bwrap, as the sandbox uid, must reach it to bind it."""
    root = base / name
    root.mkdir(parents=True, exist_ok=True)
    for d in (base, root):
        os.chmod(d, 0o755)
    return root


def short_digest(identity: str) -> str:
    """The directory name for one identity (toolchain, flags, sources): a new one gets a new directory."""
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def partial_path(target: Path) -> Path:
    """Where a file is written before `install` renames it to `target` (hidden, one per server process)."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def install(partial: Path, target: Path) -> None:
    """Rename a finished file into place, readable by the sandbox uid and writable by root only; atomic: a compile
    sees the whole file or none."""
    os.chmod(partial, 0o644)
    os.replace(partial, target)


async def run_niced(argv: Sequence[str], cwd: str, env: Optional[dict[str, str]] = None) -> tuple[int, bytes, bytes]:
    """Run a build step at a lower priority (the machine is serving runs meanwhile): its exit status, stdout and
    stderr. `env` None: the server's own environment."""
    nice = shutil.which("nice")
    proc = await asyncio.create_subprocess_exec(*([nice, "-n", "10"] if nice else []), *argv, cwd=cwd, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


class WarmArtifact(ABC):
    """A directory of files (`items`) built once per host, and how the build went: `state` (pending, building,
    ready, failed or off), which items are `built`, which `failed` and why, and how many `seconds` it took. An item
    whose file exists already (an earlier server on the host built it) is reused, not rebuilt.

    A subclass says what is its own: the tool the build needs (`_toolchain`; None: the state is "off" and its
    language takes the plain path), how one item is made (`_make`) and what is logged when it cannot be (`_warn`);
    and, where they differ from the defaults, where an item's file lies (`_target`), what the summary shows between
    state and seconds (`_details`) and the state once the build is over (`_state_when_built`)."""

    def __init__(self, base: Path, name: str, items: Sequence[str]):
        self.root = bindable_dir(base, name)
        self.items = tuple(items)
        self.built: list[str] = []
        self.failed: dict[str, str] = {}
        self.seconds: Optional[float] = None
        self.state = "pending"

    @property
    def ready(self) -> bool:
        """Every item's file is in place."""
        return all(self._target(item).is_file() for item in self.items)

    @property
    def error(self) -> Optional[str]:
        """Why the first item that failed was not built; None while none failed."""
        return next(iter(self.failed.values()), None)

    def summary(self) -> dict:
        return {"state": self.state, **self._details(),
                "seconds": None if self.seconds is None else round(self.seconds, 2)}

    async def build(self) -> None:
        """Build the items that are missing, one at a time, holding the directory's lock (another server on the
        host may be building them)."""
        tool = self._toolchain()
        if tool is None:
            self.state = "off"
            return
        self.state = "building"
        t0 = time.monotonic()
        lock = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            with tempfile.TemporaryDirectory(prefix="agentgym-warm-") as tmp:
                for item in self.items:
                    if self._target(item).is_file():
                        self.built.append(item)
                        continue
                    error = await self._make(tool, item, Path(tmp))
                    if error is None:
                        self.built.append(item)
                    else:
                        self.failed[item] = error
                        self._warn(item, error)
        finally:
            os.close(lock)
        self.seconds = time.monotonic() - t0
        self.state = self._state_when_built()

    @abstractmethod
    def _toolchain(self) -> Optional[str]:
        """The executable the build runs, or None where it is not installed."""

    @abstractmethod
    async def _make(self, tool: str, item: str, tmp: Path) -> Optional[str]:
        """Build `item` into `self._target(item)` (through `partial_path` and `install`), with `tmp` as scratch
        space; None, or what went wrong."""

    @abstractmethod
    def _warn(self, item: str, error: str) -> None:
        """Log that `item` was not built and what its language does instead."""

    def _target(self, item: str) -> Path:
        return self.root / item

    def _details(self) -> dict:
        return {"error": self.error}

    def _state_when_built(self) -> str:
        return "ready" if self.ready else "failed"
