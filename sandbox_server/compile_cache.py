"""Content-addressed cache of compile steps: the same program, inputs, flags and toolchain -> the same artifacts.

RL sends the same program many times (a GRPO group's identical samples, retries, the N test cases of one row sent
one request each), and for compiled languages the compiler is nearly the whole cost of a run. An entry holds what
a compile step left in the work dir that was not an input (the binary, Java's classes, tsc's main.js, ...), with
modes, plus the step's stdout/stderr/exit status, so a hit answers exactly what the compile answered.

Security (the sandbox runs hostile code):
- The cache lives on the host, in a root-only (0700) directory that no sandbox binds: runs never see it.
- The key is sha256 over everything the compile step reads that a request can change: language, compile and
  run command, the toolchain's identity (resolved path, size and mtime of each tool), the source and every
  input file (path and content). A run can only receive artifacts of a compile of byte-identical inputs, which
  is what it would have compiled itself; different flags or languages never share an entry.
- Artifacts are captured right after the compile step, whose processes are all dead by then, before any run
  step of that request starts: a program that rewrites its own binary does not change the cache.
- Entries are written to a temporary file and renamed into place (atomic: a reader sees a whole entry or none),
  and the total size is bounded, least recently used evicted first.
Not cached: compiles killed by a limit (time, memory, output), whose outcome depends on the machine's load.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

_HEADER = struct.Struct("<Q")


@dataclass(frozen=True)
class CompileArtifacts:
    """A compile step's answer and the files it produced: path -> (content, mode)."""

    files: Mapping[str, tuple[bytes, int]]
    return_code: int
    stdout: str
    stderr: str
    execution_time: float

    @property
    def size(self) -> int:
        return sum(len(data) for data, _ in self.files.values()) + len(self.stdout) + len(self.stderr)


def toolchain_identity(tools: Iterable[str], path: str) -> str:
    """What distinguishes one installed compiler from another without running it: each tool's resolved path,
    size and mtime (an upgrade changes them)."""
    parts = []
    for tool in tools:
        found = shutil.which(tool, path=path)
        if found is None:
            parts.append(f"{tool}:missing")
            continue
        real = os.path.realpath(found)
        st = os.stat(real)
        parts.append(f"{tool}:{real}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def cache_key(*, language: str, compile_argv: Sequence[str], run_argv: Sequence[str], toolchain: str,
              inputs: Sequence[tuple[str, bytes]]) -> str:
    """sha256 over the compile step's inputs (see the module docstring); input order does not matter."""
    h = hashlib.sha256()
    header = json.dumps({"v": 1, "language": language, "compile": list(compile_argv), "run": list(run_argv),
                         "toolchain": toolchain, "files": sorted((rel, len(data)) for rel, data in inputs)})
    h.update(header.encode())
    for _, data in sorted(inputs, key=lambda f: f[0]):
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


class CompileCache:
    """On-disk entries `<key>.entry` under `root` (root-only), LRU-bounded to `max_bytes` in total."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.root, 0, 0)
        os.chmod(self.root, 0o700)
        self._lock = threading.Lock()
        self._sizes: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.hits = self.misses = self.stores = self.evictions = 0
        for entry in sorted(self.root.glob("*.entry"), key=lambda p: p.stat().st_atime_ns):
            self._sizes[entry.stem] = entry.stat().st_size  # a restarted server keeps its predecessor's entries
        self._evict()

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r} (expected a sha256 hex digest)")
        return self.root / f"{key}.entry"

    def get(self, key: str) -> Optional[CompileArtifacts]:
        """The entry, or None; a hit becomes the most recently used."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                (n,) = _HEADER.unpack(f.read(_HEADER.size))
                meta = json.loads(f.read(n))
                files = {rel: (f.read(size), mode) for rel, size, mode in meta["files"]}
        except (OSError, ValueError, KeyError, struct.error):
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
            if key in self._sizes:
                self._sizes.move_to_end(key)
        return CompileArtifacts(files, meta["return_code"], meta["stdout"], meta["stderr"], meta["execution_time"])

    def put(self, key: str, artifacts: CompileArtifacts) -> bool:
        """Store atomically (temporary file + rename); False when the entry alone exceeds a quarter of the bound."""
        if artifacts.size > self.max_bytes // 4:
            return False
        path = self._path(key)
        meta = json.dumps({"files": [[rel, len(data), mode] for rel, (data, mode) in artifacts.files.items()],
                           "return_code": artifacts.return_code, "stdout": artifacts.stdout,
                           "stderr": artifacts.stderr, "execution_time": artifacts.execution_time}).encode()
        tmp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_HEADER.pack(len(meta)))
                f.write(meta)
                for data, _ in artifacts.files.values():
                    f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            self._sizes[key] = path.stat().st_size
            self._sizes.move_to_end(key)
            self.stores += 1
        self._evict()
        return True

    def _evict(self) -> None:
        with self._lock:
            while self._sizes and sum(self._sizes.values()) > self.max_bytes:
                key, _ = self._sizes.popitem(last=False)
                (self.root / f"{key}.entry").unlink(missing_ok=True)
                self.evictions += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._sizes), "bytes": sum(self._sizes.values()), "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses, "stores": self.stores, "evictions": self.evictions}
