"""One /run_code (or /run_cases) request end to end: fresh sandbox per step, files in, compile (or the compile
cache), run, files out, clean up."""

from __future__ import annotations

import asyncio
import base64
import logging
import binascii
import os
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Optional, Sequence

from .compile_cache import CompileArtifacts, CompileCache, cache_key, toolchain_identity
from .explain import StepLimits, kill_reason, step_notes, with_notes
from .isolation import BwrapRunner, StepResult, StepRunner, base_env, cpu_limit_s
from .languages import PCH_MOUNT, LanguageSpec
from .models import (CaseResult, CommandRunResult, CommandRunStatus, RunCasesRequest, RunCasesResponse,
                     RunCodeRequest, RunCodeResponse, RunStatus, derive_run_status, output_matches)
from .pch import PchBuilder
from .jvm_cds import JVM_MOUNT, JavacArchive
from .ts_snapshot import RUNTIME_MOUNT, TsSnapshot
from .node_zygote import MIN_MEMORY_BYTES as _WARM_NODE_MIN_MEMORY, NODE_MOUNT, NodeZygoteFiles, run_spec as node_run_spec
from .settings import SandboxSettings
from .fork_server import ForkedSandbox, ForkServer, ForkServerError, InputFile
from .workdirs import WorkDirs, remove_tree

logger = logging.getLogger("sandbox_server.executor")


_WARM_MIN_MEMORY = 64 << 20
# What a compile step may leave behind for its run step (binaries, classes): read back through the server.
_ARTIFACT_BUDGET = 256 << 20


@dataclass
class _StepOut:
    """One step's result and the files read back from its work dir (what was asked for, or all of them)."""

    step: StepResult
    files: dict[str, bytes]
    modes: dict[str, int]
    notes: list[str]


@dataclass
class _Compiled:
    """A compile step's answer (run, or from the cache) and what the run steps start from."""

    result: Optional[CommandRunResult]
    notes: list[str]
    inputs: list[InputFile]
    artifacts: list[InputFile] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # the compile step's work dir, for fetch_files

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.status == CommandRunStatus.Finished \
            and self.result.return_code == 0


def _cacheable(step: StepResult, notes: Sequence[str]) -> bool:
    """Only compiles whose outcome depends on the inputs alone: none stopped by a limit, all artifacts read."""
    out = step.outcome
    return (step.setup_error is None and not out.timed_out and out.return_code is not None and not step.oom_killed
            and not out.output_truncated and not out.output_limit_killed and step.pids_limit_hits == 0
            and kill_reason(step) is None and not notes)


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
        self.node_pool: Optional[ForkServer] = None  # runs forked from one started node (node_zygote.py)
        self.tsc_pool: Optional[ForkServer] = None  # typescript compiles forked from a node with tsc loaded
        self._pool_start: Optional[asyncio.Task] = None
        self._cleanups: set[asyncio.Task] = set()
        settings.work_root.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.work_root, 0o711)
        self.workdirs = WorkDirs(settings.work_root, settings.max_memory_limit_mb << 20,
                                 mount=isinstance(runner, BwrapRunner))
        self.cache: Optional[CompileCache] = None
        if settings.compile_cache_mb > 0:
            self.cache = CompileCache(settings.work_root / "warm-compile-cache", settings.compile_cache_mb << 20)
        self._toolchains: dict[str, str] = {}
        self.pch: Optional[PchBuilder] = None
        self._pch_task: Optional[asyncio.Task] = None
        self.ts: Optional[TsSnapshot] = None
        self._ts_task: Optional[asyncio.Task] = None
        self._node_files: Optional[NodeZygoteFiles] = None
        self.javac: Optional[JavacArchive] = None
        self._javac_task: Optional[asyncio.Task] = None
        if isinstance(runner, BwrapRunner):
            self._set_up_warm_state(runner)

    def _warm_root(self, configured: Path, name: str) -> Path:
        """The configured host dir (kept across restarts) if this server can write it, else one under its own work
        root, rebuilt at each start (a container whose root file system is read-only)."""
        for root in (configured, self.settings.work_root / f"warm-{name}"):
            try:
                root.mkdir(parents=True, exist_ok=True)
                probe = root / f".probe-{os.getpid()}"
                probe.touch()
                probe.unlink()
                return root
            except OSError as e:
                logger.info("%s is not writable (%s); trying the next place for %s", root, e, name)
        raise OSError(f"no writable directory for {name}: {configured} and the work root both refused")

    def _set_up_warm_state(self, runner: BwrapRunner) -> None:
        """The dirs every sandbox binds read-only (PCH, tsc snapshot, node fork server), before the fork server's
        template starts; their contents are built in the background. Each is an optimisation: one that cannot be
        set up is logged and left off, and its language takes the plain path."""
        settings, languages = self.settings, self.languages
        if settings.precompiled_headers and "cpp" in languages:
            try:
                self.pch = PchBuilder(self._warm_root(settings.precompiled_headers_root, "pch"),
                                      toolchain_identity(("g++",), settings.sandbox_path))
                runner.ro_binds.append((str(self.pch.root), PCH_MOUNT))
            except OSError as e:
                logger.warning("C++ precompiled headers are off: %s", e)
                self.pch = None
        if settings.node_pool_size_resolved() > 0 and "nodejs" in languages:
            try:
                self._node_files = NodeZygoteFiles(self._warm_root(settings.runtime_cache_root, "runtime"),
                                                   settings.sandbox_path)
                runner.ro_binds.append((str(self._node_files.root), NODE_MOUNT))
            except OSError as e:
                logger.warning("the node fork server is off: %s", e)
        java = languages.get("java")
        if settings.java_class_data_sharing and java is not None and java.compile is not None:
            try:
                self.javac = JavacArchive(self._warm_root(settings.runtime_cache_root, "runtime"),
                                          toolchain_identity(java.needs, settings.sandbox_path), java.compile,
                                          settings.sandbox_path)
                runner.ro_binds.append((str(self.javac.root), JVM_MOUNT))
            except OSError as e:
                logger.warning("the javac class-data archive is off: %s", e)
                self.javac = None
        ts_spec = languages.get("typescript")
        if settings.typescript_snapshot and ts_spec is not None:
            argv = list(ts_spec.compile or ())
            type_root = argv[argv.index("--typeRoots") + 1] if "--typeRoots" in argv else None
            try:
                self.ts = TsSnapshot(self._warm_root(settings.runtime_cache_root, "runtime"), type_root,
                                     settings.sandbox_path)
                runner.ro_binds.append((str(self.ts.root), RUNTIME_MOUNT))
            except OSError as e:
                logger.warning("the typescript snapshot is off (tsc compiles): %s", e)
                self.ts = None

    def start_warm_pool(self) -> None:
        """Start the fork server and the precompiled headers' build in the background (needs a running loop);
        runs take the cold path until the fork server is up, and parse headers until their PCH is built, so a
        restarted server answers at once. The fork server is off without isolation or with warm_pool_size=0."""
        if self.pch is not None:
            self._pch_task = asyncio.get_running_loop().create_task(self.pch.build())
        if self.ts is not None:
            self._ts_task = asyncio.get_running_loop().create_task(self.ts.build())
        if self.javac is not None:
            self._javac_task = asyncio.get_running_loop().create_task(self.javac.build())
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
        pool = self._fork_server(env, size)
        if not await self._started(pool, "the sandbox fork server", "every run takes the cold path"):
            return
        self.pool = pool
        if self._node_files is not None:
            await self._start_node_pool(self._node_files)

    async def _start_node_pool(self, files: NodeZygoteFiles) -> None:
        """A second template, the node fork server (node_zygote.py): nodejs runs fork one started node. Without it
        (no gcc, a node that does not export what the addon needs, ...) they exec node in a forked python run."""
        assert isinstance(self.runner, BwrapRunner)
        try:
            await files.build()
        except OSError as e:
            logger.warning("the node fork server is off (%s); nodejs runs exec node per run", e)
            return
        node = self._node_fork_server(files.argv, self._env(self.languages["nodejs"]))
        if not await self._started(node, "the node fork server", "nodejs runs exec node per run", self._check_node_pool):
            return
        self.node_pool = node
        if self.ts is not None and self.settings.typescript_fork_server:
            await self._start_tsc_pool(files, self.ts)

    def _node_fork_server(self, argv: Callable[[int], list[str]], env: dict[str, str]) -> ForkServer:
        return self._fork_server(env, self.settings.node_pool_size_resolved(), argv)

    def _fork_server(self, env: dict[str, str], size: int,
                     template_argv: Optional[Callable[[int], list[str]]] = None) -> ForkServer:
        """A fork server of `size` prepared runs (its template's pid limit leaves room for them and every running request)."""
        assert isinstance(self.runner, BwrapRunner)
        return ForkServer(self.runner, self.workdirs, env, size=size,
                          idle_memory_bytes=self.settings.memory_limit_bytes(-1),
                          template_memory_bytes=self.settings.memory_limit_bytes(-1),
                          template_pids=max(self.settings.pids_limit, 4 * (size + self.settings.max_concurrency) + 16),
                          template_argv=template_argv)

    async def _start_tsc_pool(self, files: NodeZygoteFiles, ts: TsSnapshot) -> None:
        """A third template, the tsc fork server: node_zygote.js with the compiler loaded and warmed
        (ts_snapshot.js as its warm module), so a typescript compile is a fork that checks and emits the program.
        It must compile a program with a type error exactly as the snapshot's main does before it serves; without
        it typescript compiles through the snapshot (or tsc)."""
        tsc = self._node_fork_server(lambda fd: [*files.argv(fd), ts.fork_server_script],
                                     {**self._env(self.languages["typescript"]), **ts.env()})
        if not await self._started(tsc, "the tsc fork server", "typescript compiles through the snapshot",
                                   self._check_tsc_pool):
            return
        self.tsc_pool = tsc

    async def _started(self, server: ForkServer, what: str, instead: str,
                       check: Optional[Callable[[ForkServer], Awaitable[None]]] = None) -> bool:
        """Start `server` and pass it `check`'s self-test; where either fails, close it and log why and what runs
        do without it (`instead`): each fork server is an optimisation, never a reason not to serve."""
        try:
            await server.start()
            if check is not None:
                await check(server)
        except Exception as e:
            logger.warning("%s could not start (%s: %s); %s", what, type(e).__name__, e, instead)
            await server.aclose()
            return False
        return True

    async def _check_tsc_pool(self, tsc: ForkServer) -> None:
        """One compile with a type error before any request relies on the tsc fork server: tsc's exit status,
        diagnostic and emitted main.js."""
        sandbox = await tsc.acquire()
        if sandbox is None:
            raise ForkServerError("no prepared run")
        r = await tsc.run(sandbox, spec=node_run_spec("main.ts", ["main.ts"], self._env(self.languages["typescript"])),
                          inputs=[("main.ts", b'const n: number = "x";\nconsole.log(n);\n')], stdin=None,
                          timeout=60, memory_bytes=self.settings.memory_limit_bytes(-1), fetch=["main.js"],
                          fetch_budget=1 << 20)
        out = r.step.outcome
        if out.return_code != 2 or b"TS2322" not in out.stdout or r.files.get("main.js") != b'const n = "x";\nconsole.log(n);\n':
            raise ForkServerError(f"its self-test compile failed: rc {out.return_code}, stdout {out.stdout[-1000:]!r}, "
                                  f"stderr {out.stderr[-2000:]!r}, main.js {r.files.get('main.js')!r}")

    async def _check_node_pool(self, node: ForkServer) -> None:
        """One run through the node fork server before any request relies on it: a program whose garbage
        collections use V8's jobs and whose exit takes node's teardown path, i.e. what a broken fork would hang on."""
        sandbox = await node.acquire()
        if sandbox is None:
            raise ForkServerError("no prepared run")
        code = b"const a = []; for (let i = 0; i < 400000; i++) a.push({i, s: 'x' + i}); console.log('ok', a.length);"
        r = await node.run(sandbox, spec=node_run_spec("main.js", [], self._env(self.languages["nodejs"])),
                           inputs=[("main.js", code)], stdin=None, timeout=30,
                           memory_bytes=self.settings.memory_limit_bytes(-1), fetch=[], fetch_budget=0)
        if r.step.outcome.return_code != 0 or r.step.outcome.stdout != b"ok 400000\n":
            raise ForkServerError(f"its self-test run failed: rc {r.step.outcome.return_code}, stdout "
                                  f"{r.step.outcome.stdout[:200]!r}, stderr {r.step.outcome.stderr[-2000:]!r}")

    async def aclose(self) -> None:
        for task in (self._pch_task, self._ts_task, self._javac_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._pool_start is not None:  # not cancelled: that could leave a half-started child (see ForkServer.aclose)
            await asyncio.gather(self._pool_start, return_exceptions=True)
        for pool in (self.pool, self.node_pool, self.tsc_pool):
            if pool is not None:
                await pool.aclose()
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
        if spec.compile is not None:
            return await self._run_compiled(spec, request, memory)
        if spec.name == "nodejs" and self.node_pool is not None and memory >= _WARM_NODE_MIN_MEMORY:
            t0 = time.monotonic()
            warm = await self.node_pool.acquire()
            if warm is not None:
                t1 = time.monotonic()
                try:
                    response = await self._run_forked(warm, spec, request, memory, pool=self.node_pool)
                    self.node_pool.phases.add({"acquire": t1 - t0, "request": time.monotonic() - t0})
                    return response
                except ForkServerError as e:
                    logger.warning("a forked node run failed (%s); running it again", e)
        # Tiny memory limits go the cold way: a forked interpreter's first page writes are charged to the run.
        if (self.pool is not None and spec.name in self.settings.warm_languages
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
            stdin = request.stdin.encode() if request.stdin is not None else None
            step = await self.runner.run_step(spec.run_argv(request.args, request.code), workdir=workdir,
                                              stdin=stdin,
                                              timeout=request.run_timeout, memory_bytes=memory, env=env)
            run_result, notes = to_command_result(step, self._limits(request.run_timeout, memory))
            files, fetch_notes = self._fetch(workdir, request.fetch_files)
            status, message = derive_run_status(None, run_result)
            message = "; ".join(filter(None, [message.strip(), *notes, *fetch_notes]))
            return RunCodeResponse(status=status, message=message, run_result=run_result,
                                   executor_pod_name=self.settings.executor_pod_name, files=files)
        finally:
            # Every process of the run is SIGKILLed by now; deleting its files need not delay the answer.
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(remove_tree, workdir))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _run_forked(self, forked: ForkedSandbox, spec: LanguageSpec, request: RunCodeRequest,
                          memory: int, pool: Optional[ForkServer] = None) -> RunCodeResponse:
        pool = pool or self.pool
        assert pool is not None
        env = self._env(spec)
        run_spec: dict
        if pool is self.node_pool:  # the node fork server: node runs `main args...` in a fork of itself
            run_spec = node_run_spec(spec.source, list(request.args), env)
        elif spec.name == "python":
            run_spec = {"source": spec.source, "args": list(request.args), "env": env}
        else:
            run_spec = {"argv": spec.run_argv(request.args, request.code), "env": env}
        inputs = [(rel, base64.b64decode(content)) for rel, content in request.files.items()
                  if isinstance(content, str)]  # Sandbox Fusion skips null contents
        inputs.append((spec.source, (spec.transform(request.code) if spec.transform else request.code).encode()))
        stdin = request.stdin.encode() if request.stdin is not None else None
        result = await pool.run(forked, spec=run_spec, inputs=inputs, stdin=stdin, timeout=request.run_timeout,
                                     memory_bytes=memory, fetch=request.fetch_files,
                                     fetch_budget=self.settings.max_fetch_bytes)
        run_result, notes = to_command_result(result.step, self._limits(request.run_timeout, memory))
        status, message = derive_run_status(None, run_result)
        message = "; ".join(filter(None, [message.strip(), *notes, *result.notes]))
        files = {rel: base64.b64encode(data).decode("ascii") for rel, data in result.files.items()}
        return RunCodeResponse(status=status, message=message, run_result=run_result,
                               executor_pod_name=self.settings.executor_pod_name, files=files)

    # ---- compiled languages: compile once (or take it from the cache), then run steps from its artifacts
    async def _run_compiled(self, spec: LanguageSpec, request: RunCodeRequest, memory: int) -> RunCodeResponse:
        compiled = await self._compile(spec, request, memory)
        run_result: Optional[CommandRunResult] = None
        notes = list(compiled.notes)
        if compiled.ok:
            stdin = request.stdin.encode() if request.stdin is not None else None
            run_result, run_notes, fetched = await self._run_artifacts(spec, request, compiled, stdin, memory,
                                                                       request.fetch_files)
            notes += run_notes
        else:
            fetched = {rel: compiled.files[rel] for rel in request.fetch_files if rel in compiled.files}
        status, message = derive_run_status(compiled.result, run_result)
        return RunCodeResponse(status=status, message="; ".join(filter(None, [message.strip(), *notes])),
                               compile_result=compiled.result, run_result=run_result,
                               executor_pod_name=self.settings.executor_pod_name,
                               files={rel: base64.b64encode(data).decode("ascii") for rel, data in fetched.items()})

    def _inputs(self, spec: LanguageSpec, request: RunCodeRequest) -> list[InputFile]:
        inputs: list[InputFile] = [(rel, base64.b64decode(content)) for rel, content in request.files.items()
                                   if isinstance(content, str)]  # Sandbox Fusion skips null contents
        inputs.append((spec.source, (spec.transform(request.code) if spec.transform else request.code).encode()))
        return inputs

    def _toolchain(self, spec: LanguageSpec) -> str:
        if spec.name not in self._toolchains:
            self._toolchains[spec.name] = toolchain_identity(spec.needs, self.settings.sandbox_path)
        return self._toolchains[spec.name]

    async def _compile(self, spec: LanguageSpec, request: RunCodeRequest, memory: int) -> _Compiled:
        """The compile step, or its cached answer. Its artifacts are what the step left in the work dir that was
        not an input as sent, read back right after it (every process of it dead, no run step started yet)."""
        assert spec.compile is not None
        inputs = self._inputs(spec, request)
        if spec.entry is not None and not spec.entry(request.code):
            # Sandbox Fusion's answer for Scala code without an `object` to run.
            return _Compiled(CommandRunResult(status=CommandRunStatus.Error, return_code=1,
                                              stderr="Object name not found."), [], inputs)
        compile_argv = spec.compile
        # A forked compile writes ~10-30 MB of its own (the compiler's heap is the zygote's), so it fits limits under
        # which the snapshot or tsc, which build that heap themselves (~200 MB), are killed.
        forked_tsc = spec.name == "typescript" and self.tsc_pool is not None and memory >= _WARM_MIN_MEMORY
        if spec.name == "typescript" and self.ts is not None and (self.ts.ready or forked_tsc):
            compile_argv = self.ts.compile_argv()  # the warm tsc: same options, same output (ts_snapshot.js)
        if spec.name == "java" and self.javac is not None and self.javac.ready:
            compile_argv = self.javac.compile_argv()  # javac's classes mapped from the archive: same class files
        key = None
        if self.cache is not None:
            key = cache_key(language=spec.name, compile_argv=compile_argv, run_argv=spec.run_argv(request.args,
                            request.code), toolchain=self._toolchain(spec), inputs=inputs)
            hit = await asyncio.to_thread(self.cache.get, key)
            if hit is not None:
                result = CommandRunResult(status=CommandRunStatus.Finished, execution_time=0.0,
                                          return_code=hit.return_code, stdout=hit.stdout, stderr=hit.stderr,
                                          cached=True)
                artifacts = [(rel, data, mode) for rel, (data, mode) in hit.files.items()]
                return _Compiled(result, [], inputs, artifacts)
        # A compile slowed by a busy machine is not the program's fault (tsc takes 3-7 s under load).
        timeout = max(request.compile_timeout, self.settings.min_compile_timeout_s)
        out = await self._forked_tsc(spec, inputs, timeout, memory) if forked_tsc else None
        if out is None:
            if spec.name == "typescript" and not (self.ts is not None and self.ts.ready):
                compile_argv = spec.compile  # the snapshot's blob is not built (yet): tsc itself
            out = await self._step(compile_argv, inputs=inputs, stdin=None, timeout=timeout, memory=memory,
                                   env=self._env(spec), fetch_all=True, budget=_ARTIFACT_BUDGET)
        result, step_notes_ = to_command_result(out.step, self._limits(timeout, memory))
        sent = {f[0]: f[1] for f in inputs}
        produced = {rel: (data, out.modes.get(rel, 0o644)) for rel, data in out.files.items() if sent.get(rel) != data}
        if key is not None and self.cache is not None and _cacheable(out.step, out.notes):
            assert result.return_code is not None
            entry = CompileArtifacts(produced, result.return_code, result.stdout or "", result.stderr or "",
                                     result.execution_time or 0.0)
            await asyncio.to_thread(self.cache.put, key, entry)
        notes = [f"compile: {n}" for n in (*step_notes_, *out.notes)]
        return _Compiled(result, notes, inputs, [(rel, data, mode) for rel, (data, mode) in produced.items()],
                         out.files)

    async def _forked_tsc(self, spec: LanguageSpec, inputs: Sequence[InputFile], timeout: float, memory: int
                          ) -> Optional[_StepOut]:
        """The compile step as a fork of the tsc fork server (ts_snapshot.js's `run` on main.ts), or None when no
        prepared run came (the caller then compiles through the snapshot)."""
        assert self.tsc_pool is not None
        warm = await self.tsc_pool.acquire()
        if warm is None:
            return None
        try:
            r = await self.tsc_pool.run(warm, spec=node_run_spec(spec.source, [spec.source], self._env(spec)),
                                        inputs=inputs, stdin=None, timeout=timeout, memory_bytes=memory, fetch=[],
                                        fetch_budget=_ARTIFACT_BUDGET, fetch_all=True)
        except ForkServerError as e:
            logger.warning("a forked typescript compile failed (%s); compiling it again", e)
            return None
        return _StepOut(r.step, r.files, r.modes, r.notes)

    async def _run_artifacts(self, spec: LanguageSpec, request: RunCodeRequest, compiled: _Compiled,
                             stdin: Optional[bytes], memory: int, fetch: Sequence[str]
                             ) -> tuple[CommandRunResult, list[str], dict[str, bytes]]:
        """One run step of a compiled program: a fresh sandbox with the inputs and the compile's artifacts."""
        out = await self._step(spec.run_argv(request.args, request.code), inputs=[*compiled.inputs,
                               *compiled.artifacts], stdin=stdin, timeout=request.run_timeout, memory=memory,
                               env=self._env(spec), fetch=fetch, budget=self.settings.max_fetch_bytes)
        run_result, notes = to_command_result(out.step, self._limits(request.run_timeout, memory))
        return run_result, [*notes, *out.notes], out.files

    async def _step(self, argv: Sequence[str], *, inputs: Sequence[InputFile], stdin: Optional[bytes],
                    timeout: float, memory: int, env: dict[str, str], fetch: Sequence[str] = (),
                    fetch_all: bool = False, budget: int) -> _StepOut:
        """One step in a sandbox of its own: forked when the fork server is up (the same isolation as a forked
        python run), else a cold bwrap sandbox. Reads back `fetch`, or with `fetch_all` every file."""
        if (tuple(argv[:2]) == ("node", "main.js") and self.node_pool is not None and not fetch_all
                and memory >= _WARM_NODE_MIN_MEMORY):  # typescript's run step: a fork of the node fork server
            warm = await self.node_pool.acquire()
            if warm is not None:
                try:
                    r = await self.node_pool.run(warm, spec=node_run_spec("main.js", list(argv[2:]), env),
                                                 inputs=inputs, stdin=stdin, timeout=timeout, memory_bytes=memory,
                                                 fetch=fetch, fetch_budget=budget)
                    return _StepOut(r.step, r.files, r.modes, r.notes)
                except ForkServerError as e:
                    logger.warning("a forked node step failed (%s); running it again", e)
        if self.pool is not None and self.settings.fork_compiled and memory >= _WARM_MIN_MEMORY:
            forked = await self.pool.acquire()
            if forked is not None:
                try:
                    r = await self.pool.run(forked, spec={"argv": list(argv), "env": env}, inputs=inputs,
                                            stdin=stdin, timeout=timeout, memory_bytes=memory, fetch=fetch,
                                            fetch_budget=budget, fetch_all=fetch_all)
                    return _StepOut(r.step, r.files, r.modes, r.notes)
                except ForkServerError as e:
                    logger.warning("a forked step failed (%s); running it in a sandbox of its own", e)
        workdir = self.workdirs.create(f"run-{uuid.uuid4().hex}")
        try:
            for entry in inputs:
                target = workdir / entry[0]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(entry[1])
                if len(entry) > 2:
                    os.chmod(target, entry[2] & 0o755)
            self.runner.prepare_workdir(workdir)
            step = await self.runner.run_step(argv, workdir=workdir, stdin=stdin, timeout=timeout,
                                              memory_bytes=memory, env=env)
            files, modes, notes = await asyncio.to_thread(self._read_back, workdir, None if fetch_all else fetch,
                                                          budget)
            return _StepOut(step, files, modes, notes)
        finally:
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(remove_tree, workdir))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    # ---- /run_cases
    async def run_cases(self, request: RunCasesRequest) -> RunCasesResponse:
        """Compile once, then one sandbox per case (its own limits), results per case; see README.md."""
        spec = self.check(request)
        if len(request.cases) > self.settings.max_cases:
            raise RequestRejected(f"{len(request.cases)} cases exceed this server's maximum of "
                                  f"{self.settings.max_cases} per request; split them over several requests")
        memory = self.settings.memory_limit_bytes(request.memory_limit_MB)
        compiled: Optional[_Compiled] = None
        notes: list[str] = []
        if spec.compile is not None:
            compiled = await self._compile(spec, request, memory)
            notes += compiled.notes
            if not compiled.ok:
                status, message = derive_run_status(compiled.result, None)
                skipped = [CaseResult(status=status, passed=False if c.expected_output is not None else None,
                                      skipped=True) for c in request.cases]
                return RunCasesResponse(status=status, message="; ".join(filter(None, [message.strip(), *notes])),
                                        compile_result=compiled.result, cases=skipped,
                                        executor_pod_name=self.settings.executor_pod_name)
        plain = RunCodeRequest(**request.model_dump(exclude={"cases", "compare", "stop_on_failure", "stdin"}))
        results: list[CaseResult] = []
        failed = False
        for case in request.cases:
            expect = case.expected_output
            if failed and request.stop_on_failure:
                results.append(CaseResult(status=RunStatus.Failed, passed=False if expect is not None else None,
                                          skipped=True))
                continue
            if compiled is not None:
                stdin = case.stdin.encode() if case.stdin is not None else None
                run_result, case_notes, fetched = await self._run_artifacts(spec, plain, compiled, stdin, memory,
                                                                            request.fetch_files)
                status, message = derive_run_status(None, run_result)
                message = "; ".join(filter(None, [message.strip(), *case_notes]))
                files = {rel: base64.b64encode(data).decode("ascii") for rel, data in fetched.items()}
            else:
                response = await self.run_code(plain.model_copy(update={"stdin": case.stdin}))
                status, message, run_result, files = (response.status, response.message, response.run_result,
                                                      response.files)
            passed = None
            if expect is not None:
                passed = status == RunStatus.Success and run_result is not None and \
                    output_matches(run_result.stdout or "", expect, request.compare)
            failed = failed or status != RunStatus.Success or passed is False
            results.append(CaseResult(status=status, passed=passed, message=message, run_result=run_result,
                                      files=files))
        n_passed = sum(1 for r in results if not r.skipped and r.status == RunStatus.Success and r.passed is not False)
        if any(r.status == RunStatus.SandboxError for r in results):
            overall = RunStatus.SandboxError
        else:
            overall = RunStatus.Success if n_passed == len(results) else RunStatus.Failed
        summary = f"{n_passed}/{len(results)} cases passed" if overall != RunStatus.Success else ""
        return RunCasesResponse(status=overall, message="; ".join(filter(None, [*notes, summary])),
                                compile_result=compiled.result if compiled else None, cases=results,
                                passed=n_passed, executor_pod_name=self.settings.executor_pod_name)

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
        """fetch_files of a cold run, base64-encoded (all sandbox processes are dead by now)."""
        files, _, notes = self._read_back(workdir, paths, self.settings.max_fetch_bytes)
        return {rel: base64.b64encode(data).decode("ascii") for rel, data in files.items()}, notes

    @staticmethod
    def _read_back(workdir: Path, paths: Optional[Sequence[str]], budget: int
                   ) -> tuple[dict[str, bytes], dict[str, int], list[str]]:
        """Files of a finished step's work dir (`paths`, or all when None) with their modes, within `budget` bytes,
        never following links out of the work dir."""
        files: dict[str, bytes] = {}
        modes: dict[str, int] = {}
        notes: list[str] = []
        root = os.path.realpath(workdir)
        if paths is None:
            paths = sorted(os.path.relpath(os.path.join(parent, name), root)
                           for parent, _, names in os.walk(root) for name in names)
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
                files[rel] = data
                modes[rel] = st.st_mode & 0o777
            finally:
                os.close(fd)
        return files, modes, notes
