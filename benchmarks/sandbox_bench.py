"""Sandbox server throughput and latency: python print(1) and C++ hello at several concurrency levels.

    python benchmarks/sandbox_bench.py [URL] [--concurrency 1 8 64] [--python-runs N] [--cpp-runs N]

Without URL it starts `python -m sandbox_server` on a free loopback port (as root, fully isolated).
Prints, per workload and concurrency: runs/s, p50/p99 end-to-end latency (HTTP included) and errors;
and the bare `python3 -c 'print(1)'` (and bare g++ compile+run) baselines measured interleaved with
sequential sandbox runs, so machine load affects both sides alike. That "overhead" leaves idle gaps between
sandbox runs (the bare runs), so it flatters any pool that refills in the gaps: for load figures use
benchmarks/sandbox_vs_sf.py (back to back, CPU per run, side by side with Sandbox Fusion).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

import httpx

PY_HELLO = "print(1)"
CPP_HELLO = '#include <iostream>\nint main() { std::cout << "hello" << std::endl; return 0; }\n'
WORKLOADS = {
    "python print(1)": ({"language": "python", "code": PY_HELLO}, "1\n"),
    "C++ hello": ({"language": "cpp", "code": CPP_HELLO}, "hello\n"),
}


@dataclass
class LevelResult:
    workload: str
    concurrency: int
    runs: int
    errors: int
    wall_s: float
    latencies: list[float]

    def row(self) -> str:
        lat = sorted(self.latencies) or [float("nan")]
        return (f"{self.workload:<16} c={self.concurrency:<3} runs={self.runs:<4} errors={self.errors:<3} "
                f"runs/s={self.runs / self.wall_s:7.1f}  p50={pct(lat, 50) * 1000:7.1f} ms  "
                f"p99={pct(lat, 99) * 1000:7.1f} ms")


def pct(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(q) - 1]


async def one_run(client: httpx.AsyncClient, payload: dict, expect: str) -> tuple[float, bool]:
    t0 = time.perf_counter()
    try:
        resp = await client.post("/run_code", json=payload)
        ok = resp.status_code == 200 and resp.json().get("status") == "Success" and \
            resp.json()["run_result"]["stdout"] == expect
    except httpx.HTTPError:
        ok = False
    return time.perf_counter() - t0, ok


async def run_level(url: str, workload: str, concurrency: int, total: int) -> LevelResult:
    payload, expect = WORKLOADS[workload]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await one_run(client, payload, expect)  # warm the toolchain's page cache
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)
        latencies: list[float] = []
        errors = 0

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                queue.get_nowait()
                took, ok = await one_run(client, payload, expect)
                latencies.append(took)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    return LevelResult(workload, concurrency, total, errors, wall, latencies)


# The interpreter and compiler the sandbox itself runs (PATH inside the sandbox), not a shim or venv.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
PYTHON3 = shutil.which("python3", path=SYSTEM_PATH) or "python3"
GXX = shutil.which("g++", path=SYSTEM_PATH) or "g++"


def bare_python() -> float:
    t0 = time.perf_counter()
    subprocess.run([PYTHON3, "-c", "print(1)"], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def bare_cpp(tmp: str) -> float:
    src = os.path.join(tmp, "main.cpp")
    with open(src, "w") as f:
        f.write(CPP_HELLO)
    t0 = time.perf_counter()
    subprocess.run([GXX, "-std=c++17", src, "-o", os.path.join(tmp, "main"), "-lpthread"], check=True)
    subprocess.run([os.path.join(tmp, "main")], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


async def overhead(url: str, n: int) -> None:
    """Sequential sandbox runs interleaved with bare runs of the same program."""
    payload, expect = WORKLOADS["python print(1)"]
    cpp_payload, cpp_expect = WORKLOADS["C++ hello"]
    bare, boxed, bare_c, boxed_c = [], [], [], []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one_run(client, payload, expect)
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(n):
                bare.append(bare_python())
                boxed.append((await one_run(client, payload, expect))[0])
                if i % 4 == 0:
                    bare_c.append(bare_cpp(tmp))
                    boxed_c.append((await one_run(client, cpp_payload, cpp_expect))[0])
    for name, b, s in (("python print(1)", bare, boxed), ("C++ hello", bare_c, boxed_c)):
        b50, s50 = statistics.median(b), statistics.median(s)
        print(f"baseline {name:<16} bare p50={b50 * 1000:7.1f} ms  sandboxed p50={s50 * 1000:7.1f} ms  "
              f"isolation+HTTP overhead p50={(s50 - b50) * 1000:6.1f} ms  (n={len(b)})")


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "sandbox_server", "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"ready at (http://\S+)", line)
        if m:
            return proc, m.group(1)
    raise RuntimeError("sandbox server exited before it was ready")


async def main_async(args: argparse.Namespace, url: str) -> None:
    print(f"server {url}  cpus={os.cpu_count()}  load={os.getloadavg()[0]:.2f}")
    await overhead(url, args.baseline_runs)
    for workload, runs in (("python print(1)", args.python_runs), ("C++ hello", args.cpp_runs)):
        for c in args.concurrency:
            res = await run_level(url, workload, c, max(runs, c * 2))
            print(res.row(), flush=True)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", nargs="?", help="a running server; default: start one")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--python-runs", type=int, default=200, help="runs per level (at least 2x concurrency)")
    p.add_argument("--cpp-runs", type=int, default=64)
    p.add_argument("--baseline-runs", type=int, default=60)
    args = p.parse_args(argv)
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        asyncio.run(main_async(args, url.rstrip("/")))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
