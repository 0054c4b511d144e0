"""Our sandbox server side by side with a real Sandbox Fusion, same machine, same requests, interleaved.

    python benchmarks/sandbox_vs_sf.py --sf-src /path/to/SandboxFusion [--levels 1 8 64] [--rounds 2]
        [--workloads python cpp cpp_cases nodejs typescript java go rust] [--json out.json]

Get Sandbox Fusion with `git clone https://github.com/bytedance/SandboxFusion` (measured at commit 469de08). The
script makes it runnable the way it runs natively: a venv with its declared dependencies (created once, under
`--sf-venv`), a `docs/build` dir (its server mounts it), a `condabin` dir in the venv (its python runner looks for
a conda root and then uses that venv's python) and a clean `HOME` (so root's shell start-up files do not slow
each of its `bash -c` runs). Its config is left as shipped (`isolation: none`, max_concurrency 34); ours runs
with its defaults, fully isolated (must run as root).

Each server runs in a cpuacct cgroup of its own, so CPU per run counts everything it does (HTTP, isolation,
the program). Load is back to back (no idle gaps): `level` workers each send the next request as soon as the
last one is answered. For each workload, level and round the two servers run in the order A B, then B A, so
machine load drifts hit both alike. A run counts as correct when the status is Success and stdout is exact.
The ratios are of medians over the rounds; a level where either server answered wrongly gets no ratio.

Compiled workloads send a different program each time (a unique comment line), so neither server's compile cache
(ours; Sandbox Fusion has none) answers: they measure the compiler path. `cpp_same` sends the same program every
time (a GRPO group's identical samples, retries), and so do `typescript_same`, `java_same`, `go_same` and
`rust_same`. `cpp_cases` judges one bits/stdc++.h program against 10
stdin/expected-output cases: ours in one `/run_cases` request (compiled once), Sandbox Fusion in 10 `/run_code`
requests one after the other (what a client of it does); its req/s counts programs judged. `typescript` on
Sandbox Fusion needs `tsx` on its PATH (`npm install --prefix DIR tsx`, then `--sf-extra-path DIR/node_modules/.bin`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
SF_DEPS = ["pydantic>=2.4,<2.7", "fastapi>=0.103.1,<0.104", "uvicorn[standard]==0.25.0", "structlog>=23.1,<24",
           "psutil>=5.9.8,<6", "aiofiles>=23.2.1,<24", "aiohttp>=3.9.5", "tenacity>=8.4.2,<9",
           "databases[aiosqlite]>=0.9,<0.10", "transformers>=4.44,<5"]

CPP_HELLO = '#include <iostream>\nint main() { std::cout << "hello" << std::endl; return 0; }\n'
CPP_SUM = ("#include <bits/stdc++.h>\nusing namespace std;\nint main() {\n  int n; cin >> n; vector<long long> a(n);\n"
           "  for (auto& x : a) cin >> x;\n  sort(a.begin(), a.end());\n"
           "  cout << accumulate(a.begin(), a.end(), 0LL) << ' ' << a.back() << endl;\n}\n")
CPP_CASES = [(f"{k}\n" + " ".join(str((i * 7919 + k) % 1000) for i in range(k)) + "\n",
              f"{sum((i * 7919 + k) % 1000 for i in range(k))} {max((i * 7919 + k) % 1000 for i in range(k))}\n")
             for k in range(5, 105, 10)]
JAVA_HELLO = 'public class Main {\n  public static void main(String[] args) { System.out.println("hello"); }\n}\n'
GO_HELLO = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello") }\n'
RUST_HELLO = 'fn main() { println!("hello"); }\n'
TS_HELLO = 'const greeting: string = "hello";\nconsole.log(greeting);\n'
# name -> (request fields, expected stdout, unique: prefix each request's code with a comment of its own)
WORKLOADS = {
    "python": ({"language": "python", "code": "print(1)"}, "1\n", False),
    "cpp": ({"language": "cpp", "code": CPP_HELLO}, "hello\n", True),
    "cpp_same": ({"language": "cpp", "code": CPP_HELLO}, "hello\n", False),
    "cpp_cases": ({"language": "cpp", "code": CPP_SUM}, "", True),
    "nodejs": ({"language": "nodejs", "code": "console.log(1)"}, "1\n", False),
    "typescript": ({"language": "typescript", "code": TS_HELLO}, "hello\n", True),
    "java": ({"language": "java", "code": JAVA_HELLO}, "hello\n", True),
    "go": ({"language": "go", "code": GO_HELLO}, "hello\n", True),
    "rust": ({"language": "rust", "code": RUST_HELLO}, "hello\n", True),
    # The same program every time (a GRPO group's identical samples, retries): our compile cache answers.
    "typescript_same": ({"language": "typescript", "code": TS_HELLO}, "hello\n", False),
    "java_same": ({"language": "java", "code": JAVA_HELLO}, "hello\n", False),
    "go_same": ({"language": "go", "code": GO_HELLO}, "hello\n", False),
    "rust_same": ({"language": "rust", "code": RUST_HELLO}, "hello\n", False),
}
_COMPILED = {1: 8, 8: 24, 64: 64}
RUNS = {"python": {1: 100, 8: 240, 64: 384}, "nodejs": {1: 40, 8: 96, 64: 192}, "cpp": _COMPILED,
        "cpp_same": {1: 20, 8: 64, 64: 128}, "cpp_cases": {1: 4, 8: 16, 64: 64}, "typescript": _COMPILED,
        "java": _COMPILED, "go": _COMPILED, "rust": _COMPILED,
        **{f"{lang}_same": {1: 16, 8: 48} for lang in ("typescript", "java", "go", "rust")}}
COMPILED = {"cpp", "cpp_same", "cpp_cases", "typescript", "java", "go", "rust", "typescript_same", "java_same",
            "go_same", "rust_same"}
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


# ---------------------------------------------------------------- cgroup CPU accounting
class CpuGroup:
    """A cpuacct (v1) or cpu (v2) cgroup a server is started in; `usage_s()` is its whole tree's CPU time.

    With cgroup v1 the server also gets a `cpu` group of its own: the kernel then schedules it as one group.
    Otherwise, with sched_autogroup on (the default on desktop-configured kernels), every new session is a
    scheduling group of its own, and a server that starts each run in a new session (ours does; Sandbox Fusion
    does not) would get a larger share of a machine busy with other work than one that does not.
    """

    def __init__(self, name: str):
        self.path: Optional[Path] = None
        self.sched: Optional[Path] = None
        self.v2 = False
        cpu_v1 = Path("/sys/fs/cgroup/cpu")
        if (cpu_v1 / "cpu.shares").exists() and not (cpu_v1 / "cpuacct.usage").exists():
            try:
                self.sched = cpu_v1 / _own_cgroup("cpu").lstrip("/") / name
                self.sched.mkdir(exist_ok=True)
            except OSError:
                self.sched = None
        v1 = Path("/sys/fs/cgroup/cpuacct")
        if v1.is_dir() and (v1 / "cpuacct.usage").exists():
            own = _own_cgroup("cpuacct")
            self.path = v1 / own.lstrip("/") / name
        elif (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
            self.v2 = True
            self.path = Path("/sys/fs/cgroup") / _own_cgroup("").lstrip("/") / name
        if self.path is not None:
            try:
                self.path.mkdir(exist_ok=True)
            except OSError:
                self.path = None

    def preexec(self) -> None:
        for group in (self.path, self.sched):
            if group is not None:
                (group / "cgroup.procs").write_text(str(os.getpid()))

    def usage_s(self) -> Optional[float]:
        if self.path is None:
            return None
        try:
            if self.v2:
                for line in (self.path / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        except OSError:
            return None

    def remove(self) -> None:
        for group in (self.path, self.sched):
            if group is None:
                continue
            for _ in range(100):
                try:
                    for child in sorted(group.rglob("*"), key=lambda p: -len(p.parts)):
                        if child.is_dir():
                            child.rmdir()
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _own_cgroup(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if (controller == "" and ctrls == "") or controller in ctrls.split(","):
            return path
    return "/"


# ---------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    cpu: CpuGroup
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.cpu.remove()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; log {log}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server at {url} not ready after {timeout}s; log {log}")


def start_ours(logdir: Path) -> Server:
    cpu = CpuGroup(f"bench-ours-{os.getpid()}")
    log = logdir / "ours.log"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox_server", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, preexec_fn=cpu.preexec)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, log)
    return Server("ours", url, proc, cpu, log)


def prepare_sf(src: Path, venv: Path) -> None:
    """Make a Sandbox Fusion checkout runnable natively (see the module docstring)."""
    if not (src / "sandbox" / "server" / "server.py").exists():
        raise SystemExit(f"--sf-src {src} is not a SandboxFusion checkout (no sandbox/server/server.py)")
    if not (venv / "bin" / "uvicorn").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *SF_DEPS], check=True)
    (src / "docs" / "build").mkdir(parents=True, exist_ok=True)
    (venv / "condabin").mkdir(exist_ok=True)


def start_sf(src: Path, venv: Path, logdir: Path, extra_path: str = "") -> Server:
    cpu = CpuGroup(f"bench-sf-{os.getpid()}")
    log = logdir / "sf.log"
    home = logdir / "sf-home"
    home.mkdir(exist_ok=True)
    port = free_port()
    env = {"PATH": ":".join(filter(None, [extra_path, str(venv / "bin"), SYSTEM_PATH])), "HOME": str(home),
           "LANG": "C.UTF-8"}
    proc = subprocess.Popen([str(venv / "bin" / "uvicorn"), "sandbox.server.server:app", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=src, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            preexec_fn=cpu.preexec)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, log)
    return Server("sandboxfusion", url, proc, cpu, log)


# ---------------------------------------------------------------- load
@dataclass
class Level:
    server: str
    workload: str
    in_flight: int
    round: int
    runs: int
    errors: int
    wrong: int
    wall_s: float
    cpu_per_run_ms: Optional[float]
    load_avg: float
    latencies: list[float] = field(repr=False)
    client_cpu_per_run_ms: float = 0.0

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(round(q / 100 * (len(lat) - 1))))] * 1000

    def summary(self) -> dict:
        return {"server": self.server, "workload": self.workload, "in_flight": self.in_flight, "round": self.round,
                "runs": self.runs, "errors": self.errors, "wrong": self.wrong,
                "req_per_s": round(self.runs / self.wall_s, 1), "p50_ms": round(self.pct(50), 1),
                "p95_ms": round(self.pct(95), 1), "p99_ms": round(self.pct(99), 1),
                "cpu_per_run_ms": None if self.cpu_per_run_ms is None else round(self.cpu_per_run_ms, 1),
                "client_cpu_per_run_ms": round(self.client_cpu_per_run_ms, 1), "load_avg": round(self.load_avg, 1)}


def unit_requests(server: str, workload: str, n: int) -> list[tuple[str, bytes, Optional[str]]]:
    """The HTTP requests of one unit of work: (path, body, expected stdout; None: a /run_cases answer)."""
    fields, expect, unique = WORKLOADS[workload]
    fields = {**fields, "compile_timeout": 120, "run_timeout": 60}
    if unique:
        fields["code"] = f"// {uuid.uuid4().hex} {n}\n" + fields["code"]
    if workload != "cpp_cases":
        return [("/run_code", json.dumps(fields).encode(), expect)]
    if server == "ours":
        cases = [{"stdin": stdin, "expected_output": out} for stdin, out in CPP_CASES]
        return [("/run_cases", json.dumps({**fields, "cases": cases, "compare": "exact"}).encode(), None)]
    return [("/run_code", json.dumps({**fields, "stdin": stdin}).encode(), out) for stdin, out in CPP_CASES]


async def load(server: Server, workload: str, in_flight: int, total: int, rnd: int) -> Level:
    # aiohttp, not httpx: the client shares the machine with the servers, and httpx costs ~3x more CPU per
    # request, which capped both servers' req/s alike (see client_cpu_per_run_ms).
    connector = aiohttp.TCPConnector(limit=in_flight, force_close=False)
    timeout = aiohttp.ClientTimeout(total=600)
    counter = iter(range(10**9))
    async with aiohttp.ClientSession(base_url=server.url, connector=connector, timeout=timeout) as client:
        async def unit() -> tuple[int, bool]:
            """One unit's requests in order; (worst HTTP status, all answers correct)."""
            ok = True
            for path, body, expect in unit_requests(server.name, workload, next(counter)):
                async with client.post(path, data=body, headers={"Content-Type": "application/json"}) as resp:
                    if resp.status != 200:
                        return resp.status, False
                    answer = await resp.json()
                if expect is None:
                    ok = ok and answer.get("status") == "Success" and answer.get("passed") == len(CPP_CASES)
                else:
                    run = answer.get("run_result") or {}
                    ok = ok and answer.get("status") == "Success" and run.get("stdout") == expect
            return 200, ok

        for _ in range(2):  # warm connections and page cache
            await unit()
        remaining = total
        latencies: list[float] = []
        errors = wrong = 0

        async def worker() -> None:
            nonlocal remaining, errors, wrong
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                try:
                    status, ok = await unit()
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors += 1
                elif not ok:
                    wrong += 1

        cpu0 = server.cpu.usage_s()
        client0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(in_flight)])
        wall = time.perf_counter() - t0
        client_cpu = (time.process_time() - client0) / total * 1000
        cpu1 = server.cpu.usage_s()
    cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / total * 1000
    return Level(server.name, workload, in_flight, rnd, total, errors, wrong, wall, cpu, os.getloadavg()[0],
                 latencies, client_cpu)


BARE = {"python", "nodejs", "cpp"}  # workloads with a bare host run measured between the two servers


def bare_cpu_ms(workload: str, n: int) -> tuple[float, float]:
    """Wall and CPU per run of the bare program on the host, run back to back (median wall, mean CPU)."""
    python3 = shutil.which("python3", path=SYSTEM_PATH) or "python3"
    walls = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {"PATH": SYSTEM_PATH}  # as both servers' runs see it (NODE_EXTRA_CA_CERTS alone doubles node's start-up)
    with tempfile.TemporaryDirectory() as tmp:
        if workload == "cpp":
            Path(tmp, "main.cpp").write_text(CPP_HELLO)
        for _ in range(n):
            t0 = time.perf_counter()
            if workload == "python":
                subprocess.run([python3, "-c", "print(1)"], stdout=subprocess.DEVNULL, check=True, env=env)
            elif workload == "nodejs":
                subprocess.run(["node", "-e", "console.log(1)"], stdout=subprocess.DEVNULL, check=True, env=env)
            else:
                subprocess.run(["g++", "-std=c++17", "main.cpp", "-o", "main", "-lpthread"], cwd=tmp, check=True,
                               env=env)
                subprocess.run(["./main"], cwd=tmp, stdout=subprocess.DEVNULL, check=True)
            walls.append(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / n * 1000
    return statistics.median(walls) * 1000, cpu


def table(levels: list[Level], bare: dict[str, tuple[float, float]]) -> str:
    rows = ["| workload | in flight | server | req/s | p50 ms | p95 ms | p99 ms | errors | wrong | CPU/run ms "
            "| CPU/run over bare ms | client CPU/run ms | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for lv in levels:
        s = lv.summary()
        over = "" if s["cpu_per_run_ms"] is None or lv.workload not in bare else \
            f"{s['cpu_per_run_ms'] - bare[lv.workload][1]:.1f}"
        rows.append(f"| {lv.workload} | {lv.in_flight} | {lv.server} r{lv.round} | {s['req_per_s']} | {s['p50_ms']} "
                    f"| {s['p95_ms']} | {s['p99_ms']} | {lv.errors} | {lv.wrong} | {s['cpu_per_run_ms']} | {over} "
                    f"| {s['client_cpu_per_run_ms']} | {s['load_avg']} |")
    return "\n".join(rows)


def ratios(levels: list[Level]) -> str:
    """Per workload and level: each server's median req/s over its rounds, and their ratio (rounds are
    interleaved A B, B A, ..., so the median is robust to a round hit by other work on the machine)."""
    out = []
    keys = sorted({(lv.workload, lv.in_flight) for lv in levels}, key=lambda k: (k[0], k[1]))
    for workload, c in keys:
        ours = [lv.runs / lv.wall_s for lv in levels if lv.server == "ours" and (lv.workload, lv.in_flight) == (workload, c)]
        sf = [lv.runs / lv.wall_s for lv in levels if lv.server != "ours" and (lv.workload, lv.in_flight) == (workload, c)]
        bad = {name: sum(lv.errors + lv.wrong for lv in levels if (lv.server == "ours") == (name == "ours")
                         and (lv.workload, lv.in_flight) == (workload, c)) for name in ("ours", "SF")}
        if any(bad.values()):
            out.append(f"{workload} at {c} in flight: no comparison, answers failed or wrong: {bad}")
        elif ours and sf:
            o, s = statistics.median(ours), statistics.median(sf)
            out.append(f"{workload} at {c} in flight: median req/s ours {o:.1f}, SF {s:.1f}: ours/SF = {o / s:.2f}x "
                       f"(per round: {', '.join(f'{a / b:.2f}' for a, b in zip(ours, sf))})")
    return "\n".join(out)


async def main_async(args: argparse.Namespace, ours: Server, sf: Server,
                     bare: dict[str, list[tuple[float, float]]]) -> list[Level]:
    """Every level and round: A, bare batch, B (B, bare, A in odd rounds)."""
    levels: list[Level] = []
    for workload in args.workloads:
        for c in args.levels:
            if workload in COMPILED and c > max(args.cpp_max_in_flight, 1):
                continue
            total = max(RUNS[workload].get(c, 4 * c), 2 * c) * args.scale // 100
            for rnd in range(args.rounds):
                order = (ours, sf) if rnd % 2 == 0 else (sf, ours)
                for i, server in enumerate(order):
                    if i == 1 and workload in BARE:
                        n = 2 if workload == "cpp" else max(3, args.bare_runs)
                        bare[workload].append(await asyncio.to_thread(bare_cpu_ms, workload, n))
                    lv = await load(server, workload, c, max(total, c), rnd)
                    levels.append(lv)
                    print(json.dumps(lv.summary()), flush=True)
    return levels


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sf-src", type=Path, required=True, help="a SandboxFusion checkout")
    p.add_argument("--sf-venv", type=Path, default=Path("/tmp/sandboxfusion-venv"))
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--rounds", type=int, default=2, help="rounds per level; odd rounds swap the order (A B, B A)")
    p.add_argument("--workloads", nargs="+", default=["python", "cpp", "cpp_cases", "nodejs", "typescript", "java",
                                                      "go", "rust"], choices=sorted(WORKLOADS))
    p.add_argument("--cpp-max-in-flight", type=int, default=8,
                   help="compiles are slow (Sandbox Fusion: ~0.4-1.5 s CPU each); compiled workloads skip higher levels")
    p.add_argument("--sf-extra-path", default="", help="prepended to Sandbox Fusion's PATH (e.g. where tsx is)")
    p.add_argument("--scale", type=int, default=100, help="percent of the default number of runs per level")
    p.add_argument("--bare-runs", type=int, default=10, help="bare runs between the two servers of each level")
    p.add_argument("--json", type=Path, help="write every level's summary here")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: our server isolates runs with cgroups and a dedicated uid")
    prepare_sf(args.sf_src.resolve(), args.sf_venv)
    logdir = Path(tempfile.mkdtemp(prefix="sandbox-vs-sf-"))
    print(f"cpus={os.cpu_count()} load={os.getloadavg()} logs in {logdir}", flush=True)
    samples: dict[str, list[tuple[float, float]]] = {w: [] for w in args.workloads if w in BARE}
    ours = start_ours(logdir)
    try:
        sf = start_sf(args.sf_src.resolve(), args.sf_venv, logdir, args.sf_extra_path)
        try:
            levels = asyncio.run(main_async(args, ours, sf, samples))
        finally:
            sf.stop()
        try:  # where our forked runs spent their time (the last runs of the benchmark)
            phases = httpx.get(f"{ours.url}/v1/stats", timeout=10).json().get("fork_phases") or {}
        except (httpx.HTTPError, ValueError):
            phases = {}
    finally:
        ours.stop()
    bare = {w: (statistics.median(x[0] for x in v), statistics.mean(x[1] for x in v)) for w, v in samples.items() if v}
    print()
    for w, (wall, cpu) in bare.items():
        print(f"bare {w} (interleaved with the levels): wall p50 {wall:.1f} ms, CPU {cpu:.1f} ms per run")
    print(table(levels, bare))
    print()
    print(ratios(levels))
    print(f"load average at the end: {os.getloadavg()}")
    if phases:
        print("ours, per-phase time of the last forked runs (ms, /v1/stats fork_phases):")
        for name, st in phases.items():
            print(f"  {name:11s} mean {st['mean_ms']:7.2f}  p50 {st['p50_ms']:7.2f}  p95 {st['p95_ms']:7.2f}")
    if args.json:
        args.json.write_text(json.dumps({"bare": bare, "levels": [lv.summary() for lv in levels],
                                         "cpus": os.cpu_count(), "ours_fork_phases": phases}, indent=1))


if __name__ == "__main__":
    main()
