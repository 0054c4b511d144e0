"""The node fork server: nodejs runs (and typescript's run step) fork one started node instead of starting one.

Node's start-up (~20 ms of CPU: V8's heap deserialised, node's bootstrap JavaScript run) was most of a
`console.log` run, and it was paid per run on both this server and Sandbox Fusion; taking it off the request path
with a node started ahead per run (the session-8 warm node) cut latency but not CPU, so a saturated machine ran
no faster. Here a template sandbox runs `node_zygote.js` once; every run is a fork of it, with the process tree,
namespaces, cgroup, tmpfs, capability drop and protocol of zygote_main.py's python runs (node_zygote.js), so a run
costs a fork and what its program does.

node cannot fork by itself; `node_fork.c` (a Node-API addon, built here with gcc at start) gives it the system
calls, and makes a forked node work: V8 maps its heap MADV_DONTFORK (undone before each fork), the event loop's
epoll and wake-up fds are renewed (uv_loop_fork), the platform's worker threads (absent in a fork) are reported as
none so that V8 runs its jobs on the main thread, and node's exit, which would join those threads, ends in _exit
with node's status instead. The zygote runs with `--single-threaded` (no concurrent marking, sweeping or
compilation: V8 posts no background work that a fork could not do).

Isolation is that of every forked run: the program is a fresh fork of a zygote that never ran user code, child of
its run's init (pid 1 of its pid namespace), in its own cgroup, never reused. The addon and zygote are root's
files in a read-only bind (/opt/sandbox-node, from `runtime_cache_root`).

Known differences from a cold `node main.js`: `process.uptime()` and `performance.now()` count from the zygote's
start; `process.emit`, `process.reallyExit` and `Math.random` are wrappers (Math.random draws from /dev/urandom:
the zygote's seed would repeat in every fork); an uncaught exception's stack ends in the zygote's frames;
`process.execArgv` is empty; V8 optimises on the main thread (`--single-threaded`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Optional

from .compile_cache import toolchain_identity
from .warm_artifact import bindable_dir, install

logger = logging.getLogger("sandbox_server.node_zygote")

NODE_MOUNT = "/opt/sandbox-node"
_ZYGOTE = "node_zygote.js"
_ADDON_SOURCE = "node_fork.c"
_ADDON = "node_fork.node"
# Below this memory limit a request takes the plain path: a forked node's first page writes are charged to the run.
MIN_MEMORY_BYTES = 128 << 20


def _package_bytes(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


class NodeZygoteFiles:
    """node_zygote.js and the addon built from node_fork.c, in a directory of `base` named by the sources and the
    node binary they were built for (kept across restarts where `base` is, rebuilt when any of them changes)."""

    def __init__(self, base: Path, path: str):
        self.path = path
        self.js = _package_bytes(_ZYGOTE)
        self.c = _package_bytes(_ADDON_SOURCE)
        ident = hashlib.sha256(b"\0".join([self.js, self.c, toolchain_identity(("node",), path).encode()]))
        self.root = bindable_dir(base, f"node-{ident.hexdigest()[:16]}")

    def argv(self, server_fd: int) -> list[str]:
        return ["node", "--single-threaded", f"{NODE_MOUNT}/{_ZYGOTE}", str(server_fd)]

    async def build(self) -> None:
        """Write the zygote and build the addon (gcc, ~0.3 s) unless this directory already holds them."""
        await asyncio.to_thread(self._build)

    def _build(self) -> None:
        addon = self.root / _ADDON
        zygote = self.root / _ZYGOTE
        if addon.is_file() and zygote.is_file() and zygote.read_bytes() == self.js:
            return
        gcc = shutil.which("gcc", path=self.path) or shutil.which("cc", path=self.path)
        if gcc is None:
            raise OSError("gcc is not installed: the node fork server needs it to build its addon")
        partial = self.root / f".build-{os.getpid()}"
        partial.mkdir(exist_ok=True)
        try:
            (partial / _ADDON_SOURCE).write_bytes(self.c)
            proc = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(partial / _ADDON),
                                   str(partial / _ADDON_SOURCE), "-ldl"], capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise OSError(f"building {_ADDON_SOURCE} failed (gcc exit {proc.returncode}): {proc.stderr[-2000:]}")
            (partial / _ZYGOTE).write_bytes(self.js)
            for name in (_ADDON, _ZYGOTE):
                install(partial / name, self.root / name)
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def run_spec(main: str, args: list[str], env: Optional[dict] = None) -> dict:
    """What node_zygote.js's program process runs: `node main args...` with `env`."""
    return {"main": main, "args": list(args), "env": dict(env or {})}
