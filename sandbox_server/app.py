"""HTTP layer: Sandbox Fusion's /run_code and /v1/ping on FastAPI, with admission control and body limits."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import traceback
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .admission import AdmissionController, Overloaded
from .executor import CodeExecutor, RequestRejected
from .isolation import IsolationUnavailable, StepRunner, base_env, make_runner
from .languages import available_languages
from .models import RunCasesRequest, RunCasesResponse, RunCodeRequest, RunCodeResponse, RunStatus
from .settings import SandboxSettings
from .workdirs import remove_tree

logger = logging.getLogger("sandbox_server")


class BodySizeLimit:
    """Rejects request bodies above `limit` bytes with 413 before they are buffered."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send):
        body = f'{{"detail": "request body exceeds {self.limit} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def claim_run_root(work_root: Path) -> Path:
    """This server's own dir under the shared work root; dirs of servers that died are removed."""
    work_root.mkdir(parents=True, exist_ok=True)
    os.chmod(work_root, 0o711)
    for sibling in work_root.glob("server-*"):
        pid = sibling.name.partition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            remove_tree(sibling)
    run_root = work_root / f"server-{os.getpid()}"
    run_root.mkdir(exist_ok=True)
    os.chmod(run_root, 0o711)
    return run_root


async def self_test(runner: StepRunner, settings: SandboxSettings) -> None:
    """Run one trivial sandboxed command so a broken setup fails at start, not on the first request."""
    with tempfile.TemporaryDirectory(dir=settings.work_root) as tmp:
        workdir = Path(tmp)
        runner.prepare_workdir(workdir)
        step = await runner.run_step(["/bin/sh", "-c", "echo sandbox-ok"], workdir=workdir, stdin=None, timeout=20,
                                     memory_bytes=256 << 20, env=base_env(settings, "/tmp"))
    out = step.outcome
    if step.setup_error or out.return_code != 0 or out.stdout != b"sandbox-ok\n":
        raise IsolationUnavailable(
            "the sandbox self-test failed (bubblewrap could not start an isolated process): "
            f"rc={out.return_code} stderr={out.stderr.decode(errors='replace').strip()!r}. Unprivileged user "
            "namespaces must be enabled (sysctl user.max_user_namespaces > 0; in Docker allow unshare/clone via "
            "seccomp and AppArmor); or pass --insecure-no-isolation for development.")


async def start_runtime(settings: SandboxSettings) -> CodeExecutor:
    """Set up isolation, self-test it, and return the executor (which then owns `work_root/server-<pid>`)."""
    settings = settings.model_copy(update={"work_root": claim_run_root(settings.work_root)})
    runner = make_runner(settings)
    try:
        await self_test(runner, settings)
    except BaseException:
        runner.close()
        raise
    languages = available_languages(settings.sandbox_path)
    return CodeExecutor(settings, runner, languages)


def create_app(settings: Optional[SandboxSettings] = None, executor: Optional[CodeExecutor] = None) -> FastAPI:
    """Build the ASGI app; isolation is set up (and self-tested) at startup unless `executor` is given.

    The app owns the executor either way and releases its cgroups on shutdown.
    """
    settings = settings or SandboxSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.executor = executor or await start_runtime(settings)
        app.state.executor.start_warm_pool()
        app.state.admission = AdmissionController(settings.max_concurrency, settings.max_queue,
                                                  settings.queue_timeout_s)
        try:
            yield
        finally:
            await app.state.executor.aclose()

    app = FastAPI(title="agentgym sandbox", version="0.1.0", lifespan=lifespan)

    @app.get("/v1/ping")
    async def ping() -> str:
        return "pong"  # a JSON string, exactly like Sandbox Fusion

    @app.get("/v1/languages")
    async def languages(request: Request) -> list[str]:
        return sorted(request.app.state.executor.languages)

    @app.get("/v1/stats")
    async def stats(request: Request) -> dict:
        adm: AdmissionController = request.app.state.admission
        ex: CodeExecutor = request.app.state.executor
        return {"running": adm.running, "waiting": adm.waiting, "max_concurrency": adm.max_concurrency,
                "max_queue": adm.max_queue, "fork_server": ex.fork_server_state,
                "fork_pool": ex.pool.pool_state() if ex.pool is not None else None,
                "fork_phases": ex.pool.phases.summary() if ex.pool is not None else {},
                "node_pool": ex.node_pool.pool_state() if ex.node_pool is not None else None,
                "node_phases": ex.node_pool.phases.summary() if ex.node_pool is not None else {},
                "tsc_pool": ex.tsc_pool.pool_state() if ex.tsc_pool is not None else None,
                "tsc_phases": ex.tsc_pool.phases.summary() if ex.tsc_pool is not None else {},
                "compile_cache": ex.cache.stats() if ex.cache is not None else None,
                "precompiled_headers": ex.pch.summary() if ex.pch is not None else None,
                "typescript_snapshot": ex.ts.summary() if ex.ts is not None else None,
                "javac_archive": ex.javac.summary() if ex.javac is not None else None}

    async def admitted(request: Request, body: RunCodeRequest, run: Callable[[], Awaitable[BaseModel]],
                       failed: Callable[[str], BaseModel]):
        """422 for requests that cannot run as sent, 503 + Retry-After when full, the sandbox's own failures
        in-band (as Sandbox Fusion reports them)."""
        ex: CodeExecutor = request.app.state.executor
        try:
            ex.check(body)
        except RequestRejected as e:
            return JSONResponse(status_code=422, content={"detail": str(e)})
        try:
            async with request.app.state.admission.slot():
                return await run()
        except Overloaded as e:
            retry_after = request.app.state.admission.retry_after_s()
            return JSONResponse(status_code=503, content={"detail": str(e)}, headers={"Retry-After": str(retry_after)})
        except RequestRejected as e:
            return JSONResponse(status_code=422, content={"detail": str(e)})
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the sandbox's own failure: Sandbox Fusion reports it in-band
            logger.exception("%s failed", request.url.path)
            return failed(f"sandbox error: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")

    @app.post("/run_code", response_model=RunCodeResponse)
    async def run_code(body: RunCodeRequest, request: Request):
        return await admitted(request, body, lambda: request.app.state.executor.run_code(body),
                              lambda message: RunCodeResponse(status=RunStatus.SandboxError, message=message,
                                                              executor_pod_name=settings.executor_pod_name))

    @app.post("/run_cases", response_model=RunCasesResponse)
    async def run_cases(body: RunCasesRequest, request: Request):
        """An extension: one program against many stdin/expected-output cases, compiled once (README.md)."""
        return await admitted(request, body, lambda: request.app.state.executor.run_cases(body),
                              lambda message: RunCasesResponse(status=RunStatus.SandboxError, message=message,
                                                               executor_pod_name=settings.executor_pod_name))

    app.add_middleware(BodySizeLimit, limit=settings.max_request_bytes)
    return app
