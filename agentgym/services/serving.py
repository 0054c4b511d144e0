"""Running an ASGI app with uvicorn inside the caller's event loop, and knowing its URL once it listens.

Services started by a trainer (the gateway in front of an in-process engine) must share the engine's event loop;
the command-line entry points use the same helper, so both paths start and stop servers the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uvicorn


def http_impl() -> str:
    try:
        import httptools  # noqa: F401  (faster HTTP parsing when installed)
        return "httptools"
    except ImportError:
        return "h11"


@dataclass
class RunningServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait({self.task}, timeout=10.0)
        if not self.task.done():
            self.task.cancel()

    async def wait(self) -> None:
        await self.task


async def start_server(app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> RunningServer:
    """Serve `app` on `host:port` (0 picks a free port) in this event loop; returns once the socket accepts."""
    config = uvicorn.Config(app, host=host, port=port, loop="asyncio", http=http_impl(), log_level=log_level,
                            access_log=False, timeout_keep_alive=60, backlog=4096, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if not server.started:
        await task  # raises what stopped it
        raise RuntimeError(f"the server on {host}:{port} stopped before it started listening (see the log above)")
    bound = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(server, task, host, bound)
