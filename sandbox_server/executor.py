"""One /run_code request end to end: fresh work dir, files in, compile, run, files out, clean up."""

from __future__ import annotations

import asyncio
import base64
import logging
import binascii
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Optional

from .explain import StepLimits, kill_reason, step_notes, with_notes
from .isolation import BwrapRunner, StepResult, StepRunner, base_env, cpu_limit_s
from .languages import LanguageSpec
from .models import CommandRunResult, CommandRunStatus, RunCodeRequest, RunCodeResponse, derive_run_status
from .settings import SandboxSettings
from .fork_server import ForkedSandbox, ForkServer, ForkServerError
from .workdirs import WorkDirs, remove_tree

logger = logging.getLogger("sandbox_server.executor")


_WARM_MIN_MEMORY = 64 << 20


class RequestRejected(ValueError):
    """The request cannot be run as sent (answered with 422 and this message)."""


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def to_command_result(step: StepResult, limits: StepLimits) -> tuple[CommandRunResult, list[str]]:
    """The step's wire result (limit notes appended to its stderr) and those notes."""
    out = step.outcome
    if step.setup_error is not None:
        return CommandRunResult(status=CommandRunStatus.Error, execution_time=out.execution_time,
                                stdout="", stderr=f"sandbox setup failed: {step.setup_error}"), []
    notes = step_notes(step, limits, cpu_limit_s(limits.timeout))
    return CommandRunResult(
        status=CommandRunStatus.TimeLimitExceeded if out.timed_out else CommandRunStatus.Finished,
        execution_time=round(out.execution_time, 6),
        return_code=out.return_code,
        stdout=_decode(out.stdout),
        stderr=with_notes(_decode(out.stderr), notes),
        cpu_time=None if step.cpu_time is None else round(step.cpu_time, 6),
        memory_limit_exceeded=step.oom_killed,
        peak_memory_MB=None if step.peak_memory_bytes is None else round(step.peak_memory_bytes / 2**20, 2),
        output_truncated=out.output_truncated,
        killed_by=kill_reason(step),
        pids_limit_reached=step.pids_limit_hits > 0,
    ), notes


class CodeExecutor:
    def __init__(self, settings: SandboxSettings, runner: StepRunner, languages: dict[str, LanguageSpec]):
        self.settings = settings
        self.runner = runner
        self.languages = languages
        self.pool: Optional[ForkServer] = None
        self._pool_start: Optional[asyncio.Task] = None
        self._cleanups: set[asyncio.Task] = set()
        settings.work_root.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.work_root, 0o711)
        self.workdirs = WorkDirs(settings.work_root, settings.max_memory_limit_mb << 20,
                                 mount=isinstance(runner, BwrapRunner))

    def start_warm_pool(self) -> None:
        """Start the fork server in the background (needs a running loop); runs take the cold path until it is
        up, so a restarted server answers at once. A no-op without isolation or with warm_pool_size=0."""
        size = self.settings.warm_pool_size_resolved()
        if not isinstance(self.runner, BwrapRunner) or size <= 0:
            return
        self._pool_start = asyncio.get_running_loop().create_task(self._start_pool(size))

    @property
    def fork_server_state(self) -> str:
        if self.pool is not None:
            return "ready"
        return "starting" if self._pool_start is not None and not self._pool_start.done() else "off"

    async def _start_pool(self, size: int) -> None:
        """If the fork server cannot start, every run takes the cold path (one bubblewrap sandbox per step) and a
        warning says why."""
        assert isinstance(self.runner, BwrapRunner)
        python = self.languages.get("python")
        env = self._env(python) if python is not None else base_env(self.settings, home="/tmp")
        pool = ForkServer(self.runner, self.workdirs, env, size=size,
                          idle_memory_bytes=self.settings.memory_limit_bytes(-1),
                          template_memory_bytes=self.settings.memory_limit_bytes(-1),
                          template_pids=max(self.settings.pids_limit, 4 * (size + self.settings.max_concurrency) + 16))
        try:
            await pool.start()
        except Exception as e:
            logger.warning("the sandbox fork server could not start (%s: %s); every run takes the cold path",
                           type(e).__name__, e)
            await pool.aclose()
            return
        self.pool = pool

    async def aclose(self) -> None:
        if self._pool_start is not None:  # not cancelled: that could leave a half-started child (see ForkServer.aclose)
            await asyncio.gather(self._pool_start, return_exceptions=True)
        if self.pool is not None:
            await self.pool.aclose()
        await self.runner.drain()
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)
        self.runner.close()
        await asyncio.to_thread(remove_tree, self.settings.work_root)

    def _limits(self, timeout: float, memory_bytes: int) -> StepLimits:
        return StepLimits(timeout=timeout, memory_bytes=memory_bytes, max_output_bytes=self.settings.max_output_bytes,
                          output_kill_bytes=self.settings.output_kill_bytes, pids_limit=self.settings.pids_limit)

    def _env(self, spec: LanguageSpec) -> dict[str, str]:
        return {**base_env(self.settings, home="/tmp"), **spec.env}

    def check(self, request: RunCodeRequest) -> LanguageSpec:
        spec = self.languages.get(request.language)
        if spec is None:
            raise RequestRejected(f"language {request.language!r} is not available on this server; "
                                  f"available: {sorted(self.languages)}")
        for name, value in (("compile_timeout", request.compile_timeout), ("run_timeout", request.run_timeout)):
            if value > self.settings.max_timeout_s:
                raise RequestRejected(f"{name}={value} exceeds this server's maximum of "
                                      f"{self.settings.max_timeout_s}s")
        for path, content in request.files.items():
            if isinstance(content, str):
                try:
                    base64.b64decode(content, validate=True)
                except (binascii.Error, ValueError) as e:
                    raise RequestRejected(f"files[{path!r}] is not valid base64: {e}") from e
        return spec

    async def run_code(self, request: RunCodeRequest) -> RunCodeResponse:
        spec = self.check(request)
        memory = self.settings.memory_limit_bytes(request.memory_limit_MB)
        # Tiny memory limits go the cold way: a forked interpreter's first page writes are charged to the run.
        if (self.pool is not None and spec.compile is None and spec.name in self.settings.warm_languages
                and memory >= _WARM_MIN_MEMORY):
            t0 = time.monotonic()
            forked = await self.pool.acquire()
            if forked is not None:
                t1 = time.monotonic()
                try:
                    response = await self._run_forked(forked, spec, request, memory)
                    self.pool.phases.add({"acquire": t1 - t0, "request": time.monotonic() - t0})
                    return response
                except ForkServerError as e:
                    # Its fork server died under it (runs are hermetic, so running again is safe).
                    logger.warning("a forked run failed (%s); running it in a sandbox of its own", e)
        workdir = self.workdirs.create(f"run-{uuid.uuid4().hex}")
        try:
            self._write_inputs(workdir, spec, request)
            self.runner.prepare_workdir(workdir)
            env = self._env(spec)
            compile_result: Optional[CommandRunResult] = None
            run_result: Optional[CommandRunResult] = None
            notes: list[str] = []
            if spec.entry is not None and not spec.entry(request.code):
                # Sandbox Fusion's answer for Scala code without an `object` to run.
                compile_result = CommandRunResult(status=CommandRunStatus.Error, return_code=1,
                                                  stderr="Object name not found.")
            elif spec.compile is not None:
                # A compile slowed by a busy machine is not the program's fault (tsc takes 3-7 s under load).
                compile_timeout = max(request.compile_timeout, self.settings.min_compile_timeout_s)
                step = await self.runner.run_step(spec.compile, workdir=workdir, stdin=None,
                                                  timeout=compile_timeout, memory_bytes=memory, env=env)
                compile_result, compile_notes = to_command_result(step, self._limits(compile_timeout,
                                                                                     memory))
                notes += [f"compile: {n}" for n in compile_notes]
            if compile_result is None or (compile_result.status == CommandRunStatus.Finished
                                          and compile_result.return_code == 0):
                stdin = request.stdin.encode() if request.stdin is not None else None
                step = await self.runner.run_step(spec.run_argv(request.args, request.code), workdir=workdir,
                                                  stdin=stdin,
                                                  timeout=request.run_timeout, memory_bytes=memory, env=env)
                run_result, run_notes = to_command_result(step, self._limits(request.run_timeout, memory))
                notes += run_notes
            files, fetch_notes = self._fetch(workdir, request.fetch_files)
            status, message = derive_run_status(compile_result, run_result)
            message = "; ".join(filter(None, [message.strip(), *notes, *fetch_notes]))
            return RunCodeResponse(status=status, message=message, compile_result=compile_result,
                                   run_result=run_result, executor_pod_name=self.settings.executor_pod_name,
                                   files=files)
        finally:
            # Every process of the run is SIGKILLed by now; deleting its files need not delay the answer.
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(remove_tree, workdir))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _run_forked(self, forked: ForkedSandbox, spec: LanguageSpec, request: RunCodeRequest,
                          memory: int) -> RunCodeResponse:
        assert self.pool is not None
        env = self._env(spec)
        run_spec: dict = ({"source": spec.source, "args": list(request.args), "env": env} if spec.name == "python"
                          else {"argv": spec.run_argv(request.args, request.code), "env": env})
        inputs = [(rel, base64.b64decode(content)) for rel, content in request.files.items()
                  if isinstance(content, str)]  # Sandbox Fusion skips null contents
        inputs.append((spec.source, (spec.transform(request.code) if spec.transform else request.code).encode()))
        stdin = request.stdin.encode() if request.stdin is not None else None
        result = await self.pool.run(forked, spec=run_spec, inputs=inputs, stdin=stdin, timeout=request.run_timeout,
                                     memory_bytes=memory, fetch=request.fetch_files,
                                     fetch_budget=self.settings.max_fetch_bytes)
        run_result, notes = to_command_result(result.step, self._limits(request.run_timeout, memory))
        status, message = derive_run_status(None, run_result)
        message = "; ".join(filter(None, [message.strip(), *notes, *result.notes]))
        files = {rel: base64.b64encode(data).decode("ascii") for rel, data in result.files.items()}
        return RunCodeResponse(status=status, message=message, run_result=run_result,
                               executor_pod_name=self.settings.executor_pod_name, files=files)

    def _write_inputs(self, workdir: Path, spec: LanguageSpec, request: RunCodeRequest) -> None:
        for rel, content in request.files.items():
            if not isinstance(content, str):
                continue  # Sandbox Fusion skips null contents
            target = workdir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(content))
        code = spec.transform(request.code) if spec.transform else request.code
        (workdir / spec.source).write_text(code)

    def _fetch(self, workdir: Path, paths: list[str]) -> tuple[dict[str, str], list[str]]:
        """Read requested files without following links out of the work dir (all sandbox processes are dead)."""
        files: dict[str, str] = {}
        notes: list[str] = []
        budget = self.settings.max_fetch_bytes
        root = os.path.realpath(workdir)
        for rel in paths:
            full = os.path.join(root, rel)
            real = os.path.realpath(full)
            if real != full and not real.startswith(root + os.sep):
                notes.append(f"fetch_files: {rel!r} resolves outside the work dir; skipped")
                continue
            try:
                fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # missing files are silently absent, as in Sandbox Fusion
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_size > budget:
                    notes.append(f"fetch_files: {rel!r} ({st.st_size} bytes) exceeds the remaining "
                                 f"fetch budget of {budget} bytes; skipped")
                    continue
                with os.fdopen(fd, "rb", closefd=False) as f:
                    data = f.read(budget + 1)
                budget -= len(data)
                files[rel] = base64.b64encode(data).decode("ascii")
            finally:
                os.close(fd)
        return files, notes
