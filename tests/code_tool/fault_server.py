"""A real HTTP server on loopback that speaks `/run_code` and misbehaves on request, for the client's failure paths.

It does not run code. The code's first line picks the behaviour, so concurrent calls can each get their own:

    # fault: ok                     answer Success, stdout = the code's second line
    # fault: exit 3                 answer Failed, return code 3 (a user-code failure)
    # fault: status 503 x2          answer HTTP 503 to the first 2 requests with this code, then ok
    # fault: status 503             HTTP 503 every time (add `retry-after 0.3` for the header)
    # fault: slow 5                 sleep 5 s, then ok
    # fault: malformed              200 with a body that is not JSON
    # fault: reset x1               drop the connection without an answer (first time only)
    # fault: sandbox_error x1       200 with status SandboxError
    # fault: hold 0.2               sleep, then ok (to observe concurrency)
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from aiohttp import web


def ok_body(stdout: str = "", stderr: str = "", return_code: int = 0) -> dict:
    return {
        "status": "Success" if return_code == 0 else "Failed",
        "message": "",
        "compile_result": None,
        "run_result": {
            "status": "Finished",
            "execution_time": 0.01,
            "return_code": return_code,
            "stdout": stdout,
            "stderr": stderr,
        },
        "files": {},
    }


@dataclass
class Directive:
    name: str
    args: list[str]
    times: Optional[int]  # None: every time


def parse_directive(code: str) -> Directive:
    first = code.splitlines()[0] if code else ""
    if not first.startswith("# fault:"):
        return Directive("ok", [], None)
    words = first[len("# fault:") :].split()
    times = None
    if words and words[-1].startswith("x") and words[-1][1:].isdigit():
        times = int(words.pop()[1:])
    return Directive(words[0], words[1:], times)


@dataclass
class FaultServer:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _seen: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: Optional[asyncio.AbstractEventLoop] = None
    _thread: Optional[threading.Thread] = None
    _runner: Optional[web.AppRunner] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def count(self, code: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.get("code") == code)

    def start(self) -> "FaultServer":
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fault-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/run_code", self._run_code)
        app.router.add_get("/v1/ping", self._ping)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def _run_code(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        code = body.get("code", "")
        d = parse_directive(code)
        with self._lock:
            self.requests.append(body)
            self._seen[code] += 1
            nth = self._seen[code]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            active = d.times is None or nth <= d.times
            return await self._behave(request, d if active else Directive("ok", [], None), code)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _behave(self, request: web.Request, d: Directive, code: str) -> web.StreamResponse:
        lines = code.splitlines()
        stdout = (lines[1] + "\n") if len(lines) > 1 else ""
        if d.name in ("ok",):
            return web.json_response(ok_body(stdout))
        if d.name == "exit":
            return web.json_response(ok_body(stdout, "boom\n", int(d.args[0])))
        if d.name == "status":
            headers = {}
            if "retry-after" in d.args:
                headers["Retry-After"] = d.args[d.args.index("retry-after") + 1]
            return web.Response(status=int(d.args[0]), text="overloaded", headers=headers)
        if d.name in ("slow", "hold"):
            await asyncio.sleep(float(d.args[0]))
            return web.json_response(ok_body(stdout))
        if d.name == "malformed":
            return web.Response(status=200, text='{"status": "Success", "run_res', content_type="application/json")
        if d.name == "wrongshape":
            return web.json_response({"hello": "world"})
        if d.name == "reset":
            request.transport.abort()
            return web.Response(status=200)
        if d.name == "sandbox_error":
            return web.json_response({"status": "SandboxError", "message": "executor crashed", "run_result": None})
        if d.name == "json":
            return web.json_response(json.loads(code.split("\n", 1)[1]))
        raise ValueError(f"unknown fault directive {d.name!r}")
