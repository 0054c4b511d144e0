"""Server configuration: one explicit object handed to every component (no globals)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field


def _default_work_root() -> Path:
    # tmpfs pages are charged to the memory cgroup of the run that writes them, so a run filling
    # its work dir hits its own memory limit instead of the host disk.
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / "agentgym-sandbox"
    return Path("/tmp/agentgym-sandbox")


class SandboxSettings(BaseModel):
    """Everything the server needs; defaults suit a small shared machine."""

    host: str = "127.0.0.1"
    port: int = 8080
    isolation: bool = Field(True, description="False only for development: runs code without namespaces/cgroups")

    # A forked print(1) spends most of its wall time waiting on process hand-offs (server -> init -> program ->
    # init -> keeper -> server), not on CPU: 4 per core gave 7-10% more req/s than 2 per core at 8 and 64 in flight.
    max_concurrency: int = Field(default_factory=lambda: max(8, 4 * (os.cpu_count() or 1)), ge=1)
    max_queue: int = Field(256, ge=0, description="requests waiting for a slot; beyond that 503")
    queue_timeout_s: float = Field(120.0, gt=0, description="a request waiting longer than this gets 503")

    default_memory_limit_mb: int = Field(1024, ge=16, description="used when a request says memory_limit_MB=-1")
    max_memory_limit_mb: int = Field(8192, ge=16)
    pids_limit: int = Field(256, ge=8, description="processes+threads per run (cgroup pids.max)")
    open_files_limit: int = Field(1024, ge=16)
    file_size_limit_mb: int = Field(256, ge=1, description="RLIMIT_FSIZE for any single file a run writes")
    tmp_size_mb: int = Field(512, ge=1, description="size of the run's private /tmp and /dev/shm tmpfs")
    min_compile_timeout_s: float = Field(30.0, ge=0, description="a compile step may take at least this long, "
                                         "whatever compile_timeout the request sends (Sandbox Fusion clients send 10)")
    max_timeout_s: float = Field(600.0, gt=0, description="upper bound for compile_timeout/run_timeout")

    max_output_bytes: int = Field(1 << 20, ge=1024, description="stdout/stderr kept per stream; more is dropped")
    output_kill_bytes: int = Field(64 << 20, ge=1024, description="total output after which a run is killed")
    max_request_bytes: int = Field(128 << 20, ge=1024, description="largest accepted request body")
    max_fetch_bytes: int = Field(64 << 20, ge=0, description="total size of fetch_files returned per run")

    warm_pool_size: Optional[int] = Field(None, ge=0, description="runs the fork server prepares ahead "
                                          "(None: max_concurrency + cores; 0: no fork server, every run cold)")
    warm_languages: list[str] = Field(["python", "pytest", "bash", "nodejs", "ruby", "perl", "php", "lua", "R",
                                       "racket", "sql"],
                                      description="languages run by the fork server (python in-process, the "
                                                  "others exec'd); the rest get a sandbox of their own per step")

    fork_compiled: bool = Field(True, description="compile and run steps of compiled languages also run on the fork "
                                "server (same isolation as a forked python run; the cold path when it is down)")
    compile_cache_mb: int = Field(512, ge=0, description="bound of the compile cache (0: off); on the host, "
                                  "outside every sandbox, least recently used entries evicted first")
    precompiled_headers: bool = Field(True, description="build C++ precompiled headers at start (pch.py)")
    precompiled_headers_root: Path = Field(Path("/var/cache/agentgym-sandbox/pch"),
                                           description="host dir of the precompiled headers (root's; bound "
                                           "read-only into sandboxes), kept across restarts")
    warm_node_pool_size: Optional[int] = Field(None, ge=0, description="runs of the node fork server prepared ahead "
                                               "(node_zygote.py; default: as warm_pool_size; 0: off)")
    typescript_snapshot: bool = Field(True, description="compile typescript with a node start-up snapshot of tsc "
                                      "(ts_snapshot.py), built at start")
    typescript_fork_server: bool = Field(True, description="compile typescript in forks of a node with the compiler "
                                         "loaded and warmed (the tsc fork server; needs the node fork server)")
    java_class_data_sharing: bool = Field(True, description="java compiles map javac's classes from a CDS archive "
                                          "built at start (jvm_cds.py)")
    runtime_cache_root: Path = Field(Path("/var/cache/agentgym-sandbox/runtime"),
                                     description="host dir of the warm runtimes (root's; bound read-only)")
    max_cases: int = Field(1000, ge=1, description="most cases one /run_cases request may carry")

    work_root: Path = Field(default_factory=_default_work_root)
    sandbox_uid: int = Field(61000, ge=1, description="unprivileged host uid that runs user code")
    sandbox_gid: int = Field(61000, ge=1)
    bwrap_path: str = "bwrap"
    sandbox_path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    executor_pod_name: Optional[str] = Field(default_factory=lambda: os.environ.get("MY_POD_NAME"))

    def warm_pool_size_resolved(self) -> int:
        if self.warm_pool_size is not None:
            return self.warm_pool_size
        return self.max_concurrency + (os.cpu_count() or 1)

    def node_pool_size_resolved(self) -> int:
        return self.warm_pool_size_resolved() if self.warm_node_pool_size is None else self.warm_node_pool_size

    def memory_limit_bytes(self, requested_mb: int) -> int:
        mb = self.default_memory_limit_mb if requested_mb is None or requested_mb <= 0 else requested_mb
        return min(mb, self.max_memory_limit_mb) * 1024 * 1024
