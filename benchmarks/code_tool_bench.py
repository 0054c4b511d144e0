"""Code tool throughput and latency, and what the tool adds over a bare HTTP request to the same sandbox server.

    python benchmarks/code_tool_bench.py                 # starts a sandbox server, prints both tables
    python benchmarks/code_tool_bench.py --url http://127.0.0.1:8080 --scale 2 --json out.json

Part 1 (client choice): httpx vs aiohttp, each with one pooled keep-alive client, posting /run_code to a canned-answer
endpoint (no code runs), so the figures are the HTTP clients' own cost. Part 2: `SandboxFusionTool.execute` vs a raw
aiohttp POST of the same request, at 1, 16 and 128 calls in flight: calls/s, p50, p99 and the tool's overhead at p50
(target < 10% against the real server). Against the canned endpoint the overhead is the tool's own cost in
isolation; against the real sandbox server (python and bash) it is what a rollout sees. calls/s comes from raw-only
and tool-only runs in alternating rounds; p50/p99 from a run where each worker alternates raw and tool calls, so
both meet the same load (on a busy machine, separate runs differ by more than the tool costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Awaitable, Callable

import aiohttp
import httpx

from agentgym.tools.embedded_sandbox import EmbeddedSandbox
from agentgym.tools.sandbox_fusion import SandboxFusionTool, aclose_http_sessions
from agentgym.tools.sandbox_fusion.config import run_code_endpoint

CANNED_SERVER = r"""
import asyncio, json
from aiohttp import web
BODY = json.dumps({"status": "Success", "message": "", "compile_result": None, "files": {},
                   "run_result": {"status": "Finished", "execution_time": 0.01, "return_code": 0,
                                  "stdout": "1\n", "stderr": ""}})
async def run_code(request):
    await request.read()
    return web.Response(text=BODY, content_type="application/json")
app = web.Application()
app.router.add_post("/run_code", run_code)
async def main():
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
    await site.start()
    print("ready at http://127.0.0.1:%d" % site._server.sockets[0].getsockname()[1], flush=True)
    import asyncio
    await asyncio.Event().wait()
asyncio.run(main())
"""


@dataclass
class Figures:
    name: str
    concurrency: int
    calls: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(name: str, call: Callable[[], Awaitable[None]], concurrency: int, calls: int) -> Figures:
    latencies: list[float] = []
    per_worker = max(1, calls // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            t = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return Figures(name, concurrency, len(latencies), len(latencies) / elapsed,
                   _pct(latencies, 0.5) * 1e3, _pct(latencies, 0.99) * 1e3)


async def interleaved(
    first: Callable[[], Awaitable[None]], second: Callable[[], Awaitable[None]], concurrency: int, calls: int
) -> tuple[list[float], list[float]]:
    lat_a: list[float] = []
    lat_b: list[float] = []

    async def worker(k: int) -> None:
        for i in range(max(1, calls // concurrency // 2)):
            pair = ((first, lat_a), (second, lat_b))
            for call, sink in (pair if (i + k) % 2 == 0 else pair[::-1]):
                t = time.perf_counter()
                await call()
                sink.append(time.perf_counter() - t)

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return lat_a, lat_b


def request_body(code: str, language: str) -> dict:
    return {"code": code, "language": language, "compile_timeout": 10, "run_timeout": 10, "memory_limit_MB": 1024,
            "stdin": None, "files": {}, "fetch_files": []}


async def compare_clients(url: str, scale: float) -> list[Figures]:
    body = request_body("print(1)", "python")
    out: list[Figures] = []
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=60) as hx, aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0)
    ) as ax:
        async def httpx_call() -> None:
            r = await hx.post(url, json=body)
            r.raise_for_status()
            r.json()

        async def aiohttp_call() -> None:
            async with ax.post(url, json=body) as r:
                r.raise_for_status()
                await r.json()

        for c in (1, 16, 128):
            n = int(max(c, 1000 * scale))
            await measure("warm-up", aiohttp_call, c, min(n, 200))
            await measure("warm-up", httpx_call, c, min(n, 200))
            out.append(await measure("httpx", httpx_call, c, n))
            out.append(await measure("aiohttp", aiohttp_call, c, n))
    return out


async def compare_tool_with_raw(
    base_url: str, scale: float, code: str, language: str, rounds: int, calls: dict[int, int]
) -> list[Figures]:
    endpoint = run_code_endpoint(base_url)
    body = request_body(code, language)
    out: list[Figures] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as raw_session:
        async def raw_call() -> None:
            async with raw_session.post(endpoint, json=body, timeout=aiohttp.ClientTimeout(total=60)) as r:
                r.raise_for_status()
                data = await r.json()
                assert data["status"] == "Success", data

        for c in (1, 16, 128):
            tool = SandboxFusionTool(
                {"sandbox_fusion_url": base_url, "num_workers": c, "rate_limit": 1e6, "burst": 1_000_000,
                 "enable_global_rate_limit": False, "default_timeout": 10, "default_language": language},
                None,
            )
            iid, _ = await tool.create()

            async def tool_call() -> None:
                resp, _, metrics = await tool.execute(iid, {"code": code})
                assert metrics["outcome"] == "success", resp.text

            n = int(max(c, calls[c] * scale))
            await measure("warm-up", raw_call, c, min(n, c * 2))
            await measure("warm-up", tool_call, c, min(n, c * 2))
            # Throughput: raw-only and tool-only runs, alternating.
            raws, tools = [], []
            for _ in range(rounds):
                raws.append(await measure("raw http", raw_call, c, n // rounds))
                tools.append(await measure("tool", tool_call, c, n // rounds))
            # Latency: every worker alternates a raw call and a tool call (order flipped each time), so both
            # kinds meet the same server load and machine noise; p50/p99 come from this mixed run.
            lat_raw, lat_tool = await interleaved(raw_call, tool_call, c, n)
            for name, runs, lat in (("raw http", raws, lat_raw), ("tool", tools, lat_tool)):
                out.append(Figures(name, c, len(lat), statistics.mean(r.calls_per_s for r in runs),
                                   _pct(lat, 0.5) * 1e3, _pct(lat, 0.99) * 1e3))
            await tool.release(iid)
    return out


def print_table(title: str, rows: list[Figures], overhead: bool = False) -> None:
    print(f"\n{title}")
    print(f"{'client':>10} {'in flight':>9} {'calls':>6} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}" +
          (f" {'p50 overhead':>13}" if overhead else ""))
    raw_p50: dict[int, float] = {}
    for r in rows:
        extra = ""
        if overhead:
            if r.name == "raw http":
                raw_p50[r.concurrency] = r.p50_ms
            else:
                extra = f" {100 * (r.p50_ms / raw_p50[r.concurrency] - 1):>12.1f}%"
        print(f"{r.name:>10} {r.concurrency:>9} {r.calls:>6} {r.calls_per_s:>9.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
              + extra)


async def main_async(args: argparse.Namespace) -> dict:
    results: dict = {}
    canned = subprocess.Popen([sys.executable, "-c", CANNED_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        canned_url = canned.stdout.readline().split("ready at ")[1].strip() + "/run_code"
        rows = await compare_clients(canned_url, args.scale)
        print_table("HTTP clients, canned /run_code answer (client cost only)", rows)
        results["clients"] = [asdict(r) for r in rows]
        rows = await compare_tool_with_raw(
            canned_url, args.scale, "print(1)", "python", args.rounds, {1: 2000, 16: 4000, 128: 4000}
        )
        print_table("SandboxFusionTool vs raw HTTP, canned /run_code answer (the tool's own cost)", rows,
                    overhead=True)
        results["tool_vs_raw_canned"] = [asdict(r) for r in rows]
    finally:
        canned.terminate()
        canned.wait()

    embedded = None
    url = args.url
    if url is None:
        embedded = EmbeddedSandbox(("--max-queue", "1024"))
        url = await embedded.aurl()
        print(f"\nstarted a sandbox server at {url} (isolation on)")
    try:
        for language, code in (("python", "print(1)"), ("bash", "echo 1")):
            rows = await compare_tool_with_raw(
                url, args.scale, code, language, args.rounds, {1: 200, 16: 320, 128: 512}
            )
            print_table(f"SandboxFusionTool vs raw HTTP, real sandbox server, {language} `{code}`", rows,
                        overhead=True)
            results[f"tool_vs_raw_{language}"] = [asdict(r) for r in rows]
    finally:
        await aclose_http_sessions()
        if embedded is not None:
            embedded.stop()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running sandbox server (base URL); default: start one")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the number of calls per measurement")
    p.add_argument("--rounds", type=int, default=4, help="alternating raw/tool rounds per concurrency")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
