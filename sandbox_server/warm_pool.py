"""Pre-started sandboxes for interpreted languages: namespace/cgroup setup happens off the request path.

Each warm sandbox is a complete, fresh sandbox (own empty work dir, cgroup, namespaces) whose inner
shell waits for one stdin line before exec'ing the interpreter. A request writes its files into the
work dir (a live bind mount), applies its memory/CPU limits, and releases it. A sandbox serves exactly
one request and is then destroyed like any other, so nothing carries over between runs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .cgroups import RunCgroup
from .isolation import BwrapRunner, StepResult, cpu_limit_s
from .process import Spawned
from .workdirs import WorkDirs, remove_tree

logger = logging.getLogger("sandbox_server.warm_pool")


@dataclass
class WarmSandbox:
    spawned: Spawned
    cg: RunCgroup
    workdir: Path

    def alive(self) -> bool:
        return self.spawned.proc.returncode is None


class WarmPool:
    """Keeps up to `size` held sandboxes per language ready; refills in the background after each take."""

    def __init__(self, runner: BwrapRunner, workdirs: WorkDirs, size: int, idle_memory_bytes: int,
                 hold_timeout_s: float):
        self.runner = runner
        self.workdirs = workdirs
        self.size = size
        self.idle_memory_bytes = idle_memory_bytes
        self.hold_timeout_s = hold_timeout_s
        self._specs: dict[str, tuple[list[str], dict[str, str], bool]] = {}
        self._ready: dict[str, list[WarmSandbox]] = {}
        self._pending: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    def add_language(self, name: str, argv: Sequence[str], env: Mapping[str, str], self_gated: bool = False) -> None:
        """`self_gated`: argv itself waits for the release line (a preloaded interpreter); otherwise a
        shell inside the sandbox waits for it and then execs argv."""
        self._specs[name] = (list(argv), dict(env), self_gated)
        self._ready[name] = []
        self._pending[name] = 0
        self._top_up(name)

    def take(self, name: str) -> Optional[WarmSandbox]:
        """A ready sandbox for `name`, or None (the caller then starts one the ordinary way)."""
        ready = self._ready.get(name)
        sandbox = None
        while ready:
            candidate = ready.pop()
            if candidate.alive():
                sandbox = candidate
                break
            self._spawn_task(self.destroy(candidate))
        if name in self._specs:
            self._top_up(name)
        return sandbox

    async def run(self, sandbox: WarmSandbox, *, stdin: Optional[bytes], timeout: float,
                  memory_bytes: int) -> StepResult:
        try:
            cpu_before = self.runner.arm(sandbox.cg, memory_bytes=memory_bytes)
            release = f"{cpu_limit_s(timeout)}\n".encode()
            return await self.runner.finish(sandbox.spawned, sandbox.cg, stdin=stdin, timeout=timeout,
                                            prefix=release, cpu_before=cpu_before)
        finally:
            self.runner.remove_later(sandbox.cg)

    async def destroy(self, sandbox: WarmSandbox) -> None:
        await sandbox.spawned.discard(lambda pid: sandbox.cg.kill_all())
        await sandbox.cg.remove()
        await asyncio.to_thread(remove_tree, sandbox.workdir)

    def _top_up(self, name: str) -> None:
        if self._closed:
            return
        missing = self.size - len(self._ready[name]) - self._pending[name]
        for _ in range(max(0, missing)):
            self._pending[name] += 1
            self._spawn_task(self._create(name))

    def _spawn_task(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create(self, name: str) -> None:
        argv, env, self_gated = self._specs[name]
        workdir = self.runner.settings.work_root / f"warm-{uuid.uuid4().hex}"
        cg: Optional[RunCgroup] = None
        try:
            workdir = self.workdirs.create(workdir.name)
            self.runner.prepare_workdir(workdir)
            cg = self.runner.new_cgroup(self.idle_memory_bytes)
            spawned = await self.runner.start(argv, workdir=workdir, env=env, cg=cg, timeout=self.hold_timeout_s,
                                              hold=not self_gated)
            sandbox = WarmSandbox(spawned, cg, workdir)
            if self._closed:
                await self.destroy(sandbox)
            else:
                self._ready[name].append(sandbox)
        except BaseException as e:
            if not isinstance(e, asyncio.CancelledError):
                logger.exception("could not pre-start a %s sandbox", name)
            if cg is not None:
                await cg.remove()
            remove_tree(workdir)
            if not isinstance(e, Exception):
                raise
        finally:
            self._pending[name] -= 1

    async def aclose(self) -> None:
        # Let sandboxes being started finish (_create destroys them once closed): cancelling
        # create_subprocess_exec midway leaves a child that asyncio reaps twice ("Unknown child process").
        self._closed = True
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for ready in self._ready.values():
            while ready:
                await self.destroy(ready.pop())
