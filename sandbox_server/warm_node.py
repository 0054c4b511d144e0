"""A warm node for nodejs (and typescript's run step): each prepared fork-server run starts `node` ahead of its
request, in that run's own namespaces, cgroup and fresh tmpfs, with every privilege already dropped; the
request then only hands it the program (node_loader.js). Node's start-up (~25 ms CPU, most of a `console.log`
run) moves off the request path: the latency of a run at low load drops by that much. It does not make node
cheaper: each run still starts its own node (nothing is shared between runs), so throughput on a saturated
machine stays what node's start-up allows.

Isolation is that of every forked run: the node process is the run's program process, child of the run's init
(pid 1 of its pid namespace), and is never reused. The loader is root's file in a read-only bind
(/opt/sandbox-node, from `runtime_cache_root`).

Known differences from a cold `node main.js`: `performance.now()`/`process.uptime()` count from node's start,
i.e. include the time the run waited in the pool; an uncaught exception's stack ends with the loader's frames
instead of node's own entry point.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Mapping

NODE_MOUNT = "/opt/sandbox-node"
_LOADER = "node_loader.js"
# Below this memory limit a request takes the plain path: the waiting node already holds ~35 MB of the run's memory.
MIN_MEMORY_BYTES = 128 << 20


def install_loader(base: Path) -> Path:
    """Write node_loader.js (package data) under `base`, in a directory named by its content; returns that dir."""
    text = resources.files(__package__).joinpath(_LOADER).read_bytes()
    root = base / f"node-{hashlib.sha256(text).hexdigest()[:16]}"
    root.mkdir(parents=True, exist_ok=True)
    for d in (base, root):  # bwrap, as the sandbox uid, must reach it to bind it
        os.chmod(d, 0o755)
    target = root / _LOADER
    if not target.is_file() or target.read_bytes() != text:
        partial = target.with_name(f".{_LOADER}.{os.getpid()}.tmp")
        partial.write_bytes(text)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    return root


def prestart_spec(env: Mapping[str, str]) -> dict:
    return {"argv": ["node", f"{NODE_MOUNT}/{_LOADER}"], "env": dict(env)}
