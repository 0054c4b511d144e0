"""`python -m sandbox_server --host H --port N [--insecure-no-isolation] [--max-concurrency K] [--max-queue Q]`.

Prints `sandbox_server ready at http://H:N` once the socket accepts connections (port 0 picks a free one).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import uvicorn

from .app import create_app, start_runtime
from .isolation import IsolationUnavailable
from .settings import SandboxSettings


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sandbox_server", description="Sandbox Fusion-compatible code runner")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed in the ready line)")
    p.add_argument("--insecure-no-isolation", action="store_true",
                   help="run code without namespaces/cgroups/uid switch (development only, NOT safe)")
    p.add_argument("--max-concurrency", type=int, default=None, help="runs executing at once")
    p.add_argument("--max-queue", type=int, default=None, help="requests allowed to wait; beyond that 503")
    p.add_argument("--default-memory-mb", type=int, default=None, help="memory limit when a request sends -1")
    p.add_argument("--work-root", type=Path, default=None, help="parent dir of per-run work dirs (tmpfs advised)")
    p.add_argument("--warm-pool-size", type=int, default=None,
                   help="pre-started python sandboxes kept ready (0 disables the warm pool)")
    p.add_argument("--sandbox-uid", type=int, default=None, help="host uid (and gid) that runs user code")
    p.add_argument("--compile-cache-mb", type=int, default=None,
                   help="bound of the compile cache in MB (0 turns it off; default 512)")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> SandboxSettings:
    overrides = {
        "host": args.host, "port": args.port, "isolation": not args.insecure_no_isolation,
        "max_concurrency": args.max_concurrency, "max_queue": args.max_queue,
        "default_memory_limit_mb": args.default_memory_mb, "work_root": args.work_root,
        "sandbox_uid": args.sandbox_uid, "sandbox_gid": args.sandbox_uid, "warm_pool_size": args.warm_pool_size,
        "compile_cache_mb": args.compile_cache_mb,
    }
    return SandboxSettings(**{k: v for k, v in overrides.items() if v is not None})


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401  (faster HTTP parsing when installed)
        return "httptools"
    except ImportError:
        return "h11"


async def serve(settings: SandboxSettings, log_level: str = "warning") -> int:
    try:
        executor = await start_runtime(settings)
    except IsolationUnavailable as e:
        print(f"sandbox_server: refusing to start: {e}", file=sys.stderr, flush=True)
        return 2
    if not settings.isolation:
        print("sandbox_server: WARNING: --insecure-no-isolation: code runs unconfined as this server's user",
              file=sys.stderr, flush=True)
    try:
        app = create_app(settings, executor)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, loop="asyncio", http=_http_impl(),
                                log_level=log_level, access_log=False, timeout_keep_alive=30, backlog=2048)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1]
            print(f"sandbox_server ready at http://{settings.host}:{port}", flush=True)
        await task
        return 0 if server.started else 1
    finally:
        executor.runner.close()


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(serve(settings_from_args(args), args.log_level)))


if __name__ == "__main__":
    main()
