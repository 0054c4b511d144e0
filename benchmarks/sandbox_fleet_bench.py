"""Code-tool calls/s against a fleet of 1, 2 and 3 real sandbox servers on this machine (issue 31).

    python benchmarks/sandbox_fleet_bench.py [--servers 1 2 3] [--calls 300] [--in-flight 48] [--rounds 3]
                                             [--code 'print(1)']

Starts the largest fleet once (`python -m sandbox_server` on free loopback ports, isolation on), then, round after
round, sends `--calls` calls through one `SandboxFusionTool` naming the first 1, 2, 3 servers, with `--in-flight`
calls at a time and no rate limit of the tool's own in the way; fleet sizes are interleaved within each round so the
machine's load falls on all of them alike. Prints per fleet size: calls/s per round, the median, the share each server
served, how busy the machine's cores were meanwhile (/proc/stat, everyone's load included), and `uptime`.

All servers share this machine's cores: once one server keeps them busy, more servers add no throughput. A fleet
pays off when its servers sit on different machines (or the cores one server cannot use).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentgym.tools.sandbox_fusion import SandboxFusionTool, aclose_http_sessions  # noqa: E402
from tests.code_tool.sandbox_process import SandboxProcess  # noqa: E402


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat: everything on the machine, the other users' load included."""
    fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


async def one_round(urls: list[str], calls: int, in_flight: int, code: str) -> tuple[float, dict[str, int], int]:
    tool = SandboxFusionTool({"sandbox_fusion_url": urls, "enable_global_rate_limit": False, "rate_limit": 1e6,
                              "num_workers": in_flight, "default_timeout": 30}, None)
    iid, _ = await tool.create()
    sem = asyncio.Semaphore(in_flight)

    async def call() -> dict:
        async with sem:
            return (await tool.execute(iid, {"code": code}))[2]

    started = time.perf_counter()
    metrics = await asyncio.gather(*(call() for _ in range(calls)))
    wall = time.perf_counter() - started
    served: dict[str, int] = {}
    for m in metrics:
        served[m["server"]] = served.get(m["server"], 0) + 1
    errors = sum(m["outcome"] != "success" for m in metrics)
    await aclose_http_sessions()
    return calls / wall, served, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--in-flight", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--code", default="print(1)")
    args = ap.parse_args()

    servers = [SandboxProcess().start() for _ in range(max(args.servers))]
    try:
        urls = [s.url for s in servers]
        rates: dict[int, list[float]] = {n: [] for n in args.servers}
        cpu: dict[int, list[float]] = {n: [] for n in args.servers}
        shares: dict[int, dict[str, int]] = {n: {} for n in args.servers}
        asyncio.run(one_round(urls[:1], 20, 4, args.code))  # warm the fork servers
        for _ in range(args.rounds):
            for n in args.servers:
                busy0, total0 = machine_busy()
                rate, served, errors = asyncio.run(one_round(urls[:n], args.calls, args.in_flight, args.code))
                busy1, total1 = machine_busy()
                cpu[n].append(100 * (busy1 - busy0) / max(1, total1 - total0))
                rates[n].append(rate)
                for url, k in served.items():
                    shares[n][url] = shares[n].get(url, 0) + k
                if errors:
                    print(f"  {n} server(s): {errors} calls did not succeed")
        print(f"cores: {os.cpu_count()}, {args.calls} calls of {args.code!r} per round, {args.in_flight} in flight, "
              f"{args.rounds} rounds interleaved")
        for n in args.servers:
            total = sum(shares[n].values())
            split = " / ".join(f"{shares[n].get(u + '/run_code', 0) / total:.0%}" for u in urls[:n])
            print(f"{n} server(s): calls/s median {statistics.median(rates[n]):6.1f}  rounds "
                  f"[{', '.join(f'{r:.1f}' for r in rates[n])}]  served {split}  "
                  f"machine CPU busy {statistics.median(cpu[n]):.0f} %")
        print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
