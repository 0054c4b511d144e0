"""Per-run cgroups (v1 or v2, detected at start) for kernel-enforced memory/pids limits and tree kills.

A child joins its run's cgroup before exec (see isolation.py), so every descendant, including
double-forked and setsid'd ones, is accounted and killed with it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional


class CgroupUnavailable(RuntimeError):
    """No usable memory+pids cgroup hierarchy; the message says what is missing."""


@dataclass(frozen=True)
class _Mount:
    mountpoint: Path
    root: str
    fstype: str
    options: frozenset[str]


def _read_mounts() -> list[_Mount]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        if len(rf) < 3:
            continue
        mountpoint = lf[4].replace("\\040", " ")
        mounts.append(_Mount(Path(mountpoint), lf[3], rf[0], frozenset(rf[2].split(","))))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """Controller name (or '' for the v2 unified hierarchy) -> this process's cgroup path."""
    result: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            result[""] = path
        for ctrl in controllers.split(","):
            if ctrl:
                result[ctrl] = path
    return result


def _under(mount: _Mount, cgroup_path: str) -> Path:
    rel = cgroup_path
    if mount.root != "/" and (cgroup_path == mount.root or cgroup_path.startswith(mount.root + "/")):
        rel = cgroup_path[len(mount.root):]
    return mount.mountpoint / rel.lstrip("/")


# Plain os-level I/O: these run several times per request on the event loop, where open()'s text layer and
# pathlib's parsing cost more than the syscalls.
def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def _read_keyed(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in _read(path).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


def _read_int(path: Path) -> Optional[int]:
    try:
        return int(_read(path).strip())
    except (OSError, ValueError):
        return None


def _read_pids(procs: Path) -> list[int]:
    try:
        return [int(p) for p in _read(procs).split()]
    except OSError:
        return []


@dataclass
class RunCgroup:
    """The cgroup(s) of one sandboxed step."""

    version: int
    memory_dir: Path
    pids_dir: Path
    cpu_dir: Optional[Path]
    dirs: list[Path] = field(default_factory=list)
    memory_limit: Optional[int] = None

    @property
    def join_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def set_memory_limit(self, limit_bytes: int) -> None:
        if limit_bytes == self.memory_limit:  # a prepared run whose request keeps the default limit
            return
        self.memory_limit = None
        if self.version == 2:
            _write(self.memory_dir / "memory.max", str(limit_bytes))
            self.memory_limit = limit_bytes
            return
        limit, memsw = self.memory_dir / "memory.limit_in_bytes", self.memory_dir / "memory.memsw.limit_in_bytes"
        # v1 requires limit <= memsw at every moment: raise memsw first, lower it last.
        order = [limit, memsw]
        if memsw.exists() and limit_bytes > (_read_int(limit) or 0):
            order = [memsw, limit]
        for path in order:
            if path.exists():
                _write(path, str(limit_bytes))
        self.memory_limit = limit_bytes

    def reset_peak(self) -> None:
        if self.version == 1:
            try:
                _write(self.memory_dir / "memory.max_usage_in_bytes", "0")
            except OSError:
                pass

    def pids(self) -> list[int]:
        return _read_pids(self.pids_dir / "cgroup.procs")

    def oom_kills(self) -> int:
        if self.version == 2:
            return _read_keyed(self.memory_dir / "memory.events").get("oom_kill", 0)
        return _read_keyed(self.memory_dir / "memory.oom_control").get("oom_kill", 0)

    def pids_limit_hits(self) -> int:
        """How many forks/clones the pids limit refused (pids.events `max`, v1 and v2)."""
        return _read_keyed(self.pids_dir / "pids.events").get("max", 0)

    def peak_memory_bytes(self) -> Optional[int]:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        return _read_int(self.memory_dir / name)

    def cpu_time_s(self) -> Optional[float]:
        if self.cpu_dir is None:
            return None
        if self.version == 2:
            usec = _read_keyed(self.cpu_dir / "cpu.stat").get("usage_usec")
            return None if usec is None else usec / 1e6
        ns = _read_int(self.cpu_dir / "cpuacct.usage")
        return None if ns is None else ns / 1e9

    async def kill_all(self, spare: Iterable[int] = ()) -> None:
        """SIGKILL every process in the group (except `spare`) until a pass finds none not yet signalled.

        A SIGKILLed process never runs user code again, so once this returns the run can no longer act,
        even while the kernel is still tearing its processes (and namespaces) down.
        """
        signalled = set(spare)
        if self.version == 2 and not signalled and (self.pids_dir / "cgroup.kill").exists():
            try:
                _write(self.pids_dir / "cgroup.kill", "1")
                return
            except OSError:
                pass
        for _ in range(1000):
            victims = [p for p in self.pids() if p not in signalled]
            if not victims:
                return
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            signalled.update(victims)
            await asyncio.sleep(0)

    async def remove(self) -> None:
        """Kill stragglers and delete the group; retries while the kernel finishes tearing tasks down."""
        for attempt in range(1000):
            if attempt % 10 == 0 and self.pids():
                await self.kill_all()
            busy = False
            for d in self.dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    busy = True
            if not busy:
                return
            await asyncio.sleep(0.002 if attempt < 50 else 0.02)
        raise RuntimeError(f"cgroup {self.pids_dir} still busy after repeated kills")


class CgroupManager:
    """Owns a parent cgroup for this server and creates one child per run step."""

    def __init__(self, version: int, bases: dict[str, Path]):
        self.version = version
        self._bases = bases  # "memory"/"pids"/"cpu" -> parent dir (same dir for all in v2)

    @classmethod
    def setup(cls, name: str) -> "CgroupManager":
        """Detect the hierarchy and create `name` under this process's own cgroup."""
        mounts = _read_mounts()
        own = _own_cgroups()
        v2_mounts = [m for m in mounts if m.fstype == "cgroup2"]
        v1_by_ctrl = {c: m for m in mounts if m.fstype == "cgroup" for c in m.options}
        if "memory" in v1_by_ctrl and "pids" in v1_by_ctrl:
            return cls._setup_v1(name, v1_by_ctrl, own)
        for mount in v2_mounts:
            controllers = (mount.mountpoint / "cgroup.controllers")
            try:
                avail = set(controllers.read_text().split())
            except OSError:
                continue
            if {"memory", "pids"} <= avail:
                return cls._setup_v2(name, mount, own.get("", "/"))
        raise CgroupUnavailable(
            "no cgroup hierarchy with the memory and pids controllers is mounted writable "
            "(looked for cgroup v1 /sys/fs/cgroup/{memory,pids} and a cgroup2 mount). In Docker, run with "
            "--cgroupns=private and a writable /sys/fs/cgroup, or start with --insecure-no-isolation for development."
        )

    @classmethod
    def _setup_v1(cls, name: str, by_ctrl: dict[str, _Mount], own: dict[str, str]) -> "CgroupManager":
        bases: dict[str, Path] = {}
        wanted = ["memory", "pids"] + (["cpuacct"] if "cpuacct" in by_ctrl else [])
        for ctrl in wanted:
            base = _under(by_ctrl[ctrl], own.get(ctrl, "/")) / name
            _remove_stale_siblings(base)
            try:
                base.mkdir(exist_ok=True)
            except OSError as e:
                raise CgroupUnavailable(f"cannot create cgroup {base}: {e}; the server must run as root "
                                        "with /sys/fs/cgroup writable") from e
            bases["cpu" if ctrl == "cpuacct" else ctrl] = base
        mem = bases["memory"]
        if (mem / "memory.use_hierarchy").exists() and _read_int(mem / "memory.use_hierarchy") == 0:
            try:
                _write(mem / "memory.use_hierarchy", "1")
            except OSError:
                pass
        return cls(1, bases)

    @classmethod
    def _setup_v2(cls, name: str, mount: _Mount, own_path: str) -> "CgroupManager":
        parent = _under(mount, own_path)
        try:
            _enable_controllers(parent)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise CgroupUnavailable(f"cannot enable memory/pids controllers in {parent}: {e}") from e
            _evacuate_to_leaf(parent)
            try:
                _enable_controllers(parent)
            except OSError as e2:
                raise CgroupUnavailable(f"cannot enable memory/pids controllers in {parent}: {e2}") from e2
        base = parent / name
        _remove_stale_siblings(base)
        try:
            base.mkdir(exist_ok=True)
            _enable_controllers(base)
        except OSError as e:
            raise CgroupUnavailable(f"cannot set up cgroup {base}: {e}") from e
        return cls(2, {"memory": base, "pids": base, "cpu": base})

    def create(self, run_name: str, memory_bytes: int, pids_max: int) -> RunCgroup:
        dirs: list[Path] = []
        for base in dict.fromkeys(self._bases.values()):
            d = base / run_name
            d.mkdir()
            dirs.append(d)
        mem = self._bases["memory"] / run_name
        pids = self._bases["pids"] / run_name
        cpu = self._bases["cpu"] / run_name if "cpu" in self._bases else None
        group = RunCgroup(self.version, mem, pids, cpu, dirs)
        if self.version == 2:
            for optional, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if (mem / optional).exists():
                    _write(mem / optional, value)
        group.set_memory_limit(memory_bytes)
        _write(pids / "pids.max", str(pids_max))
        return group

    def close(self) -> None:
        for base in dict.fromkeys(self._bases.values()):
            _remove_tree(base)


def _remove_tree(cgroup_dir: Path) -> None:
    """rmdir a cgroup and its (process-free) children; cgroup dirs cannot be removed recursively at once."""
    if not cgroup_dir.is_dir():
        return
    for child in cgroup_dir.iterdir():
        if child.is_dir():
            _remove_tree(child)
    try:
        cgroup_dir.rmdir()
    except OSError:
        pass


def _remove_stale_siblings(base: Path) -> None:
    """Groups left by servers that died without cleaning up (named <prefix>-<pid>)."""
    prefix, _, _ = base.name.rpartition("-")
    for sibling in base.parent.glob(prefix + "-*"):
        pid = sibling.name.rpartition("-")[2]
        if sibling != base and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove_tree(sibling)


def _enable_controllers(cgroup_dir: Path) -> None:
    have = set((cgroup_dir / "cgroup.subtree_control").read_text().split())
    missing = [c for c in ("memory", "pids") if c not in have]
    if missing:
        _write(cgroup_dir / "cgroup.subtree_control", " ".join("+" + c for c in missing))


def _evacuate_to_leaf(cgroup_dir: Path) -> None:
    """cgroup v2 forbids processes in a group that delegates controllers; move them to a leaf."""
    leaf = cgroup_dir / "agentgym-server"
    leaf.mkdir(exist_ok=True)
    for pid in _read_pids(cgroup_dir / "cgroup.procs"):
        try:
            _write(leaf / "cgroup.procs", str(pid))
        except OSError:
            pass
