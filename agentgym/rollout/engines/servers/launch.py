"""Starting SGLang or vLLM servers for a run that names the engine but gives no server URLs, as verl does.

Each server is a child process in its own process group (`python -m sglang.launch_server ...` or `vllm serve ...`)
on a free loopback port, with the run's tensor-parallel size, GPU memory fraction and dtype; the launcher waits
for its `/health`, and stopping sends SIGTERM to the group, then SIGKILL after `stop_timeout_s`. With several
servers, server i sees GPUs [i*g, (i+1)*g) of the visible ones (g = GPUs per server, the TP size by default).
`command` replaces the whole command line (tests start a protocol server this way; a cluster may wrap the
command in its own launcher); `{model_path}`, `{host}` and `{port}` in it are filled in.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from agentgym.errors import ConfigError
from agentgym.rollout.engines.base import EngineError

log = logging.getLogger(__name__)

ServerKind = Literal["sglang", "vllm"]
_PACKAGES = {"sglang": "sglang", "vllm": "vllm"}


@dataclass
class LaunchConfig:
    """`engine_kwargs.<engine>.launch`: how many servers, where, and any extra command-line arguments."""

    num_servers: int = 1
    host: str = "127.0.0.1"
    ports: list[int] | None = None
    gpus_per_server: int | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    start_timeout_s: float = 1200.0
    stop_timeout_s: float = 30.0
    health_path: str = "/health"
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if self.num_servers < 1:
            raise ValueError(f"num_servers must be at least 1, got {self.num_servers}")
        if self.ports is not None and len(self.ports) != self.num_servers:
            raise ValueError(f"ports lists {len(self.ports)} port(s) for {self.num_servers} server(s)")


@dataclass
class ServerSpec:
    """What every launched server serves and with which resources (from `actor_rollout_ref.rollout`)."""

    kind: ServerKind
    model_path: str
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    dtype: str = "bfloat16"
    max_model_len: int | None = None
    vllm_logprobs_mode: str = "processed_logprobs"


def package_available(kind: ServerKind) -> bool:
    return importlib.util.find_spec(_PACKAGES[kind]) is not None


def server_command(spec: ServerSpec, host: str, port: int) -> list[str]:
    """The command verl would run for one server (its TP size, memory fraction, dtype and context length options);
    vLLM also reports prefix-cache hits (`--enable-prompt-tokens-details`) and the logprobs the engine needs."""
    common = [str(x) for x in (host, port)]
    if spec.kind == "sglang":
        length = ["--context-length", str(spec.max_model_len)] if spec.max_model_len else []
        return [
            sys.executable, "-m", "sglang.launch_server", "--model-path", spec.model_path, "--host", common[0],
            "--port", common[1], "--tp-size", str(spec.tensor_parallel_size),
            "--mem-fraction-static", str(spec.gpu_memory_utilization), "--dtype", spec.dtype, *length,
        ]
    cli = shutil.which("vllm", path=str(Path(sys.executable).parent)) or shutil.which("vllm")
    prefix = [cli] if cli else [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    return prefix + [
        "serve", spec.model_path, "--host", common[0], "--port", common[1],
        "--tensor-parallel-size", str(spec.tensor_parallel_size),
        "--gpu-memory-utilization", str(spec.gpu_memory_utilization), "--dtype", spec.dtype,
        "--logprobs-mode", spec.vllm_logprobs_mode, "--enable-prompt-tokens-details",
        *(["--max-model-len", str(spec.max_model_len)] if spec.max_model_len else []),
    ]


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerLauncher:
    """Starts the servers on `start()` (returning their URLs) and stops every one of them on `stop()`."""

    def __init__(self, spec: ServerSpec, config: LaunchConfig | None = None, *, url_key: str = "",
                 die_with_parent: bool = False):
        """`die_with_parent`: the kernel kills each server when this process dies, even by SIGKILL (a rollout-pool
        actor that Ray kills takes its server with it; Linux only)."""
        self.spec = spec
        self.die_with_parent = die_with_parent
        self.config = config or LaunchConfig()
        if self.config.command is None and not package_available(spec.kind):
            pip = "sglang[all]" if spec.kind == "sglang" else "vllm"
            raise ConfigError(
                f"rollout.name={spec.kind} with no server URLs starts the {spec.kind} servers itself, but the "
                f"`{_PACKAGES[spec.kind]}` package is not installed in this Python ({sys.executable}).",
                entry=url_key or None,
                fix=f"pip install {pip} (it pins its own torch version), start the servers yourself and list "
                f"their URLs in {url_key or 'the engine urls'}, or set actor_rollout_ref.rollout.name=transformers "
                f"(agentgym's in-process engine: nothing to install)",
            )
        self.processes: list[asyncio.subprocess.Process] = []
        self.urls: list[str] = []
        self.log_paths: list[Path] = []
        self._logs: list[Any] = []
        self._scratch: Path | None = None
        # Servers outlive nothing: if stop() is never awaited (a crash, a caller that forgot), they are stopped
        # when the launcher is collected or the interpreter exits.
        self._pids: list[int] = []
        self._finalizer = weakref.finalize(self, _stop_groups, self._pids, self.config.stop_timeout_s)

    def scratch_dir(self, name: str) -> str:
        """A folder for the run's servers (e.g. weight versions to load), removed with the servers at `stop()`."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"agentgym-{self.spec.kind}-"))
            weakref.finalize(self, shutil.rmtree, self._scratch, True)  # also when the servers never started
        return str(self._scratch / name)

    def commands(self, ports: list[int]) -> list[list[str]]:
        cfg = self.config
        out = []
        for port in ports:
            if cfg.command is not None:
                values = {"{model_path}": self.spec.model_path, "{host}": cfg.host, "{port}": str(port)}
                out.append([_fill(part, values) for part in cfg.command])
            else:
                out.append(server_command(self.spec, cfg.host, port) + list(cfg.extra_args))
        return out

    def _env(self, index: int) -> dict[str, str]:
        env = {**os.environ, **self.config.env}
        if self.spec.kind == "vllm":
            env.setdefault("VLLM_SERVER_DEV_MODE", "1")  # weight reloads and cache resets are dev-mode routes
        if self.config.num_servers > 1:
            per = self.config.gpus_per_server or self.spec.tensor_parallel_size
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            devices = visible.split(",") if visible else [str(i) for i in range(per * self.config.num_servers)]
            mine = devices[index * per:(index + 1) * per]
            if len(mine) < per:
                raise EngineError(
                    f"server {index} needs {per} GPU(s) but only {len(devices)} are visible ({devices}) for "
                    f"{self.config.num_servers} servers; lower launch.num_servers or the tensor-parallel size"
                )
            env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
        return env

    async def start(self) -> list[str]:
        if self.processes:
            return self.urls
        cfg = self.config
        ports = list(cfg.ports) if cfg.ports else [free_port(cfg.host) for _ in range(cfg.num_servers)]
        log_dir = Path(cfg.log_dir) if cfg.log_dir else Path(tempfile.mkdtemp(prefix=f"agentgym-{self.spec.kind}-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for i, (port, argv) in enumerate(zip(ports, self.commands(ports))):
                path = log_dir / f"server-{i}-port{port}.log"
                handle = open(path, "ab")
                self._logs.append(handle)
                self.log_paths.append(path)
                log.info("starting %s server %d: %s (log: %s)", self.spec.kind, i, " ".join(argv), path)
                try:
                    proc = await asyncio.create_subprocess_exec(
                        *argv, stdout=handle, stderr=asyncio.subprocess.STDOUT, env=self._env(i), start_new_session=True,
                        preexec_fn=_kill_me_with_parent if self.die_with_parent else None,
                    )
                except OSError as exc:
                    raise EngineError(f"could not run {argv[0]!r} to start a {self.spec.kind} server: {exc}") from exc
                self.processes.append(proc)
                self._pids.append(proc.pid)
                self.urls.append(f"http://{cfg.host}:{port}")
            await asyncio.gather(*(self._wait_healthy(i) for i in range(len(self.processes))))
        except BaseException:
            await self.stop()
            raise
        return list(self.urls)

    async def _wait_healthy(self, index: int) -> None:
        proc, url = self.processes[index], self.urls[index]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout_s
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                if proc.returncode is not None:
                    raise EngineError(
                        f"the {self.spec.kind} server for {url} exited with code {proc.returncode} before it was "
                        f"healthy; its log ends with:\n{self._log_tail(index)}"
                    )
                try:
                    if (await client.get(f"{url}{self.config.health_path}")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if loop.time() > deadline:
                    raise EngineError(
                        f"the {self.spec.kind} server for {url} was not healthy within {self.config.start_timeout_s}s "
                        f"(launch.start_timeout_s); its log ends with:\n{self._log_tail(index)}"
                    )
                try:
                    await asyncio.wait_for(proc.wait(), timeout=0.5)
                except asyncio.TimeoutError:
                    pass

    def _log_tail(self, index: int, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_paths[index].read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self) -> None:
        """SIGTERM each server's process group, then SIGKILL what is left after `stop_timeout_s`."""
        procs, self.processes = self.processes, []
        self._pids.clear()
        for proc in procs:
            if proc.returncode is None:
                _signal_group(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=self.config.stop_timeout_s)
            except asyncio.TimeoutError:
                log.warning("server process %d ignored SIGTERM; killing it", proc.pid)
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
            _signal_group(proc.pid, signal.SIGKILL)  # workers a server left behind in its group
        for handle in self._logs:
            handle.close()
        self._logs = []
        self.urls = []
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _kill_me_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG), where Linux offers it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _fill(part: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        part = part.replace(key, value)
    return part


def _stop_groups(pids: list[int], timeout_s: float) -> None:
    """Synchronous stop for interpreter exit: SIGTERM each group, reap, SIGKILL what is left."""
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    waiting = list(pids)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    waiting.remove(pid)
            except ChildProcessError:
                waiting.remove(pid)
        time.sleep(0.05)
    for pid in pids:
        _signal_group(pid, signal.SIGKILL)
    pids.clear()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
