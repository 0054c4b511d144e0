"""How one step of a run is confined: bubblewrap namespaces + an unprivileged uid + cgroup + rlimits.

Layout inside the sandbox: read-only /usr and the /etc entries runtimes need (etc_layout.py) from the host (plus the merged-usr symlinks),
the run's work dir at /workspace (read-write, the only host path it can write), private tmpfs /tmp and
/dev/shm, a private /proc and minimal /dev. Namespaces: user, pid, net (loopback only), ipc, uts, mount,
cgroup. bwrap runs as a dedicated host uid (settings.sandbox_uid) inside an unprivileged user namespace
where the code sees itself as `nobody` (65534); it holds no capabilities on the host and cannot create
further user namespaces.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Protocol, Sequence

from .cgroups import CgroupManager, CgroupUnavailable, RunCgroup
from .etc_layout import generated_files, host_etc_args
from .process import ProcessOutcome, Spawned, kill_process_group, run_process, spawn, supervise
from .settings import SandboxSettings

SANDBOX_WORKDIR = "/workspace"
_INNER_ID = 65534
_BWRAP_SETUP_PREFIX = b"bwrap: "


class IsolationUnavailable(RuntimeError):
    """Isolation cannot be set up on this host; the message says why and how to fix it."""


@dataclass
class StepResult:
    outcome: ProcessOutcome
    cpu_time: Optional[float] = None
    oom_killed: bool = False
    peak_memory_bytes: Optional[int] = None
    pids_limit_hits: int = 0
    setup_error: Optional[str] = None


class StepRunner(Protocol):
    async def run_step(self, argv: Sequence[str], *, workdir: Path, stdin: Optional[bytes], timeout: float,
                       memory_bytes: int, env: Mapping[str, str]) -> StepResult: ...

    def prepare_workdir(self, workdir: Path) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


def base_env(settings: SandboxSettings, home: str) -> dict[str, str]:
    """The only environment user code sees: nothing from the server's own environment."""
    return {
        "PATH": settings.sandbox_path,
        "HOME": home,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def cpu_limit_s(timeout: float) -> int:
    """RLIMIT_CPU per process: a little above the wall-clock limit, which normally fires first."""
    return max(1, math.ceil(timeout)) + 1


def _rlimits(settings: SandboxSettings, timeout: float) -> list[tuple[int, tuple[int, int]]]:
    cpu = cpu_limit_s(timeout)
    fsize = settings.file_size_limit_mb * 1024 * 1024
    return [
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_NOFILE, (settings.open_files_limit, settings.open_files_limit)),
    ]


def _make_preexec(limits: list) -> Callable[[], None]:
    def preexec() -> None:
        for res, value in limits:
            resource.setrlimit(res, value)

    return preexec


# Waits for the server to place it in its cgroup and set its limits (see run_process's `gate`), then
# drops root for good and becomes bwrap. sh + setpriv are exec'd from the server with vfork: much
# cheaper than a Python preexec_fn, which forks the whole server process.
_LAUNCH_SCRIPT = 'read -r _ || exit 111; exec "$@"'


def _apply_limits(pid: int, join_files: Sequence[str], limits: list) -> None:
    for path in join_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)
    for res, value in limits:
        resource.prlimit(pid, res, value)


def _memfd(name: str, content: bytes) -> int:
    """An fd the child inherits, positioned at the start of `content` (read once by bwrap)."""
    fd = os.memfd_create(name)
    try:
        os.write(fd, content)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _root_layout() -> list[str]:
    """bwrap args that reproduce the host's /bin, /lib* symlinks (merged /usr) or bind real dirs, and /etc's
    entries the runtimes need (etc_layout.py)."""
    args = ["--ro-bind", "/usr", "/usr", *host_etc_args()]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    return args


class BwrapRunner:
    """Fully isolated step runner (the default)."""

    def __init__(self, settings: SandboxSettings, cgroups: CgroupManager, bwrap: str, setpriv: str, sh: str):
        self.settings = settings
        self.cgroups = cgroups
        self.bwrap = bwrap
        self._layout = _root_layout()
        self._cleanups: set[asyncio.Task] = set()
        # Host dirs every sandbox sees read-only (the precompiled headers): (host path, path inside). Set before
        # the fork server's template starts, which passes them on to every forked run.
        self.ro_binds: list[tuple[str, str]] = []
        self._launcher = [sh, "-c", _LAUNCH_SCRIPT, "sandbox-launch", setpriv,
                          f"--reuid={settings.sandbox_uid}", f"--regid={settings.sandbox_gid}", "--clear-groups",
                          "--"]

    @classmethod
    def create(cls, settings: SandboxSettings) -> "BwrapRunner":
        if os.geteuid() != 0:
            raise IsolationUnavailable(
                "the sandbox server must run as root to create cgroups and switch to the sandbox uid "
                f"(running as uid {os.geteuid()}); run it as root or pass --insecure-no-isolation for development")
        bwrap = shutil.which(settings.bwrap_path)
        if bwrap is None:
            raise IsolationUnavailable(f"bubblewrap ({settings.bwrap_path!r}) is not installed; "
                                       "install the Debian package 'bubblewrap'")
        for d in (settings.work_root, *settings.work_root.parents):
            if d.exists() and not os.stat(d).st_mode & 0o001:
                raise IsolationUnavailable(
                    f"the work root {settings.work_root} is not reachable by the sandbox uid: {d} is not "
                    "world-traversable (o+x); choose a --work-root whose parents are, e.g. /dev/shm/...")
        setpriv, sh = shutil.which("setpriv"), shutil.which("sh") or "/bin/sh"
        if setpriv is None:
            raise IsolationUnavailable("setpriv is not installed; install the Debian package 'util-linux'")
        try:
            cgroups = CgroupManager.setup(f"agentgym-sandbox-{os.getpid()}")
        except CgroupUnavailable as e:
            raise IsolationUnavailable(str(e)) from e
        return cls(settings, cgroups, bwrap, setpriv, sh)

    def prepare_workdir(self, workdir: Path) -> None:
        for root, dirs, files in os.walk(workdir):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), self.settings.sandbox_uid, self.settings.sandbox_gid)
        os.chown(workdir, self.settings.sandbox_uid, self.settings.sandbox_gid)
        os.chmod(workdir, 0o700)

    def bwrap_argv(self, argv: Sequence[str], workdir: Path, env: Mapping[str, str],
                   files: Sequence[str] = (), cap_add: bool = False) -> list[str]:
        """`files`: more layout args (e.g. `--file FD /etc/passwd`), applied before the root turns read-only.
        `cap_add`: the process keeps its capabilities inside the sandbox's own user namespace (the fork
        server's template needs them to build each run's namespaces; user code never runs with them)."""
        tmp_size = str(self.settings.tmp_size_mb * 1024 * 1024)
        args = [
            self.bwrap,
            "--unshare-all", "--unshare-user", "--disable-userns",
            *(["--cap-add", "ALL"] if cap_add else []),
            "--uid", str(_INNER_ID), "--gid", str(_INNER_ID),
            "--hostname", "sandbox",
            "--die-with-parent", "--new-session",
            *self._layout,
            *files,
            *[arg for src, dest in self.ro_binds for arg in ("--ro-bind", src, dest)],
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", tmp_size, "--tmpfs", "/tmp",
            "--size", tmp_size, "--tmpfs", "/dev/shm",
            "--bind", str(workdir), SANDBOX_WORKDIR,
            "--remount-ro", "/",
            "--chdir", SANDBOX_WORKDIR,
            "--clearenv",
        ]
        for key, value in env.items():
            args += ["--setenv", key, value]
        return args + ["--", *argv]



    async def start(self, argv: Sequence[str], *, workdir: Path, env: Mapping[str, str], cg: RunCgroup,
                    timeout: float, extra_fds: Sequence[int] = (), cap_add: bool = False) -> Spawned:
        """Start `argv` confined in `cg`; `extra_fds` are inherited by `argv` under the same numbers."""
        limits = _rlimits(self.settings, timeout)
        inner = list(argv)
        fds: list[int] = []
        try:
            files: list[str] = []
            for dest, content in generated_files().items():
                fds.append(_memfd("sandbox-etc", content))
                files += ["--file", str(fds[-1]), dest]
            full = self.bwrap_argv(inner, workdir, env, files, cap_add=cap_add)
            split = full.index("--")
            # bwrap's options travel in a memfd (`--args FD`): bwrap's command line, which the sandbox sees
            # as /proc/1/cmdline, then carries no host path.
            fds.append(_memfd("bwrap-args", b"".join(o.encode() + b"\0" for o in full[1:split])))
            return await spawn([*self._launcher, self.bwrap, "--args", str(fds[-1]), *full[split:]], env={},
                               cwd="/", max_output_bytes=self.settings.max_output_bytes,
                               output_kill_bytes=self.settings.output_kill_bytes, pass_fds=[*fds, *extra_fds],
                               gate=lambda pid: _apply_limits(pid, cg.join_files, limits),
                               pipe_owner=(self.settings.sandbox_uid, self.settings.sandbox_gid))
        finally:
            for fd in fds:
                os.close(fd)

    async def finish(self, spawned: Spawned, cg: RunCgroup, *, stdin: Optional[bytes], timeout: float,
                     cpu_before: float = 0.0) -> StepResult:
        async def kill_tree(bwrap_pid: int) -> None:
            # Spare bwrap's outer process: it reaps the namespace's init and exits by itself,
            # so nothing is orphaned; the pid namespace dies with its init.
            await cg.kill_all(spare=(bwrap_pid,))

        outcome = await supervise(spawned, stdin=stdin, timeout=timeout, kill_tree=kill_tree)
        cpu = cg.cpu_time_s()
        result = StepResult(outcome, cpu_time=None if cpu is None else max(0.0, cpu - cpu_before),
                            oom_killed=cg.oom_kills() > 0, peak_memory_bytes=cg.peak_memory_bytes(),
                            pids_limit_hits=cg.pids_limit_hits())
        if outcome.return_code == 1 and not outcome.stdout and outcome.stderr.startswith(_BWRAP_SETUP_PREFIX):
            result.setup_error = outcome.stderr.decode(errors="replace").strip()
        return result

    def new_cgroup(self, memory_bytes: int) -> RunCgroup:
        return self.cgroups.create(f"run-{uuid.uuid4().hex}", memory_bytes, self.settings.pids_limit)

    def arm(self, cg: RunCgroup, *, memory_bytes: int) -> float:
        """Apply a request's memory limit to a prepared sandbox before its run; returns its CPU time so far."""
        cg.set_memory_limit(memory_bytes)
        cg.reset_peak()
        return cg.cpu_time_s() or 0.0

    def remove_later(self, cg: RunCgroup) -> None:
        """Delete a finished step's cgroup off the request path: its processes are already SIGKILLed,
        but the kernel may still be tearing down their namespaces (mount teardown waits for RCU)."""
        task = asyncio.get_running_loop().create_task(cg.remove())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def run_step(self, argv: Sequence[str], *, workdir: Path, stdin: Optional[bytes], timeout: float,
                       memory_bytes: int, env: Mapping[str, str]) -> StepResult:
        cg = self.new_cgroup(memory_bytes)
        try:
            spawned = await self.start(argv, workdir=workdir, env=env, cg=cg, timeout=timeout)
            return await self.finish(spawned, cg, stdin=stdin, timeout=timeout)
        finally:
            self.remove_later(cg)

    async def drain(self) -> None:
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)

    def close(self) -> None:
        self.cgroups.close()


class InsecureRunner:
    """No namespaces, no uid switch, no cgroups: for development on machines without isolation support."""

    def __init__(self, settings: SandboxSettings):
        self.settings = settings

    def prepare_workdir(self, workdir: Path) -> None:
        pass

    async def run_step(self, argv: Sequence[str], *, workdir: Path, stdin: Optional[bytes], timeout: float,
                       memory_bytes: int, env: Mapping[str, str]) -> StepResult:
        preexec = _make_preexec(_rlimits(self.settings, timeout))

        async def kill_tree(pid: int) -> None:
            kill_process_group(pid)

        outcome = await run_process(
            list(argv), env=env, cwd=str(workdir), stdin=stdin, timeout=timeout,
            max_output_bytes=self.settings.max_output_bytes, output_kill_bytes=self.settings.output_kill_bytes,
            preexec_fn=preexec, kill_tree=kill_tree, new_session=True)
        return StepResult(outcome)

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_runner(settings: SandboxSettings) -> StepRunner:
    return BwrapRunner.create(settings) if settings.isolation else InsecureRunner(settings)
