"""The fork server that runs inside the template sandbox (fork_server.py starts it; zygote.py says how).

Stdlib only: it runs under the system python3 that user code gets, not the server's interpreter. The server
sends this file's text to `python3 - FD` on stdin (so a run's /proc/1/cmdline stays `python3 - FD`); it is a
module of its own so that linters, type checkers and tests see it, and importing it does nothing.

Process tree of one run, all inside the template (the template's user namespace keeps its capabilities
so that children can build namespaces without a nested user namespace, which the template forbids):

    zygote (pre-imported python; forks on request, never runs user code)
      `- keeper (per run): new mount/pid/net/ipc/uts namespaces, fresh tmpfs /workspace /tmp /dev/shm,
         |                 loopback up; waits for the run, then answers fetch_files
         `- init (pid 1 of the run's pid namespace): fresh /proc, tells the server its pid (SCM_CREDENTIALS)
              |   so the server moves it into the run's cgroup, then on "go" writes the input files,
              |   enters a new cgroup namespace, drops every capability (no_new_privs) and forks
              `- program: python code run in-process (like `python3 main.py`), or exec of argv

The init reaps orphans and exits with the program's status (128+signal for a signal), which kills
whatever the program left behind. Nothing returns to the zygote, so no run sees another's state.
"""
import builtins
import ctypes
import fcntl
import gc
import json
import os
import resource
import signal
import socket
import struct
import sys
import time
import types

# Warm imports: loaded once here, so that every forked python run finds them already imported.
import bisect  # noqa: F401
import collections  # noqa: F401
import dataclasses  # noqa: F401
import functools  # noqa: F401
import heapq  # noqa: F401
import itertools  # noqa: F401
import math  # noqa: F401
import re  # noqa: F401
import string  # noqa: F401
import typing  # noqa: F401

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_NS = 0x00020000 | 0x20000000 | 0x40000000 | 0x08000000 | 0x04000000  # mnt pid net ipc uts
_NEWCGROUP = 0x02000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_RDONLY, _MS_REMOUNT, _MS_BIND = 2, 4, 8, 1, 32, 4096
_MS_REC, _MS_PRIVATE = 1 << 14, 1 << 18


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def _mount(src, target, fstype, flags, data=None):
    _check(_libc.mount(src.encode(), target.encode(), fstype and fstype.encode(), flags,
                       data and data.encode()), "mount " + target)


def _loopback_up():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = fcntl.ioctl(s, 0x8913, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", req)[1] | 1 | 0x40
        fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags))
    finally:
        s.close()


def _drop_privileges(cpu):
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        _check(_libc.prctl(24, cap, 0, 0, 0), "PR_CAPBSET_DROP")
    _libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    header = struct.pack("Ii", 0x20080522, 0)
    _check(_libc.capset(header, bytes(24)), "capset")
    _check(_libc.prctl(38, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _recv(sock, nfds=0):
    msg, anc, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(nfds * 4) if nfds else 0)
    fds = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += list(struct.unpack("%di" % (len(data) // 4), data[:len(data) - len(data) % 4]))
    return msg, fds


def _write_inputs(blob_fd):
    """The blob: 8-byte length of a JSON index [[path, size(, mode)], ...], the index, then the contents in order.
    A mode (compiled programs the server sends back in: their exec bits) is applied as sent, masked to 0o755."""
    with os.fdopen(blob_fd, "rb") as blob:
        (n,) = struct.unpack("<Q", blob.read(8))
        for entry in json.loads(blob.read(n)):
            rel, size = entry[0], entry[1]
            data = blob.read(size)
            target = os.path.join("/workspace", rel)
            parent = os.path.dirname(target)
            if parent:
                os.makedirs(parent, exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
                if len(entry) > 2:
                    os.fchmod(f.fileno(), entry[2] & 0o755)


def _all_files(root):
    """Every path below `root` (relative), without descending into links: what a compile step produced."""
    found = []
    for parent, dirs, names in os.walk(root):
        for name in names:
            found.append(os.path.relpath(os.path.join(parent, name), root))
    return sorted(found)


def _fetch(paths, budget):
    """Requested files with their modes, never following a link out of /workspace (everything the run started is
    dead by now)."""
    files, notes, root = {}, [], "/workspace"
    for rel in paths:
        full = os.path.join(root, rel)
        real = os.path.realpath(full)
        if real != full and not real.startswith(root + os.sep):
            notes.append("fetch_files: %r resolves outside the work dir; skipped" % rel)
            continue
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not (st.st_mode & 0o170000 == 0o100000):
                continue
            if st.st_size > budget:
                notes.append("fetch_files: %r (%d bytes) exceeds the remaining fetch budget of %d bytes; skipped"
                             % (rel, st.st_size, budget))
                continue
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(budget + 1)
            budget -= len(data)
            files[rel] = (data, st.st_mode & 0o777)
        finally:
            os.close(fd)
    return files, notes


def _send_files(sock, files, notes):
    fd = os.memfd_create("fetched")
    index = []
    for rel, (data, mode) in files.items():
        os.write(fd, data)
        index.append([rel, len(data), mode])
    os.lseek(fd, 0, os.SEEK_SET)
    sock.sendmsg([json.dumps({"files": index, "notes": notes}).encode()],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
    os.close(fd)


def _confine(cpu):
    """What the program runs under: a cgroup namespace of its own, no capability, no_new_privs, its CPU limit;
    the init itself becomes non-dumpable, so the program (same uid) cannot ptrace it and its socket."""
    _check(_libc.unshare(_NEWCGROUP), "unshare(CLONE_NEWCGROUP)")
    _drop_privileges(cpu)
    _libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0


def _become_program(sock, stdio):
    """In the forked program process: its own session, the run's stdio as 0-2, nothing else."""
    _libc.prctl(4, 1, 0, 0, 0)
    sock.close()
    os.setsid()
    for i, fd in enumerate(stdio):
        os.dup2(fd, i)
    os.closerange(3, 1 << 16)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.chdir("/workspace")


def _init(sock, stdio, cpu_default):
    """pid 1 of the run. Returns (in the program process only) the run's spec."""
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    for sub in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"):
        if os.path.exists(sub):
            _mount(sub, sub, None, _MS_BIND | _MS_REC)
            _mount("none", sub, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    sock.send(b"ready")
    msg, fds = _recv(sock, 1)
    if not msg:
        os._exit(0)
    spec = json.loads(msg)
    times = {"go": time.monotonic()}
    if fds:
        _write_inputs(fds[0])
    _confine(spec.get("cpu", cpu_default))
    program = os.fork()
    if program == 0:
        _become_program(sock, stdio)
        return spec
    times["forked"] = time.monotonic()
    os.closerange(0, 3)
    os.closerange(sock.fileno() + 1, 1 << 16)
    os.closerange(3, sock.fileno())
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
        if pid == program:
            times["reaped"] = time.monotonic()
            try:  # per-phase timing for the server's /v1/stats; the run's status comes from the keeper
                sock.send(json.dumps({"times": times}).encode())
            except OSError:
                pass
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _keeper(header, fds):
    """One run: namespaces and fresh mounts, then the run's init; answers the server after the init exits."""
    stdin_r, stdout_w, stderr_w, sock_fd = fds
    sock = socket.socket(fileno=sock_fd)
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    _check(_libc.unshare(_NS), "unshare")
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE)
    flags = _MS_NOSUID | _MS_NODEV
    _mount("sandbox", "/workspace", "tmpfs", flags, "mode=0700,size=%d" % header["workspace_size"])
    _mount("tmpfs", "/tmp", "tmpfs", flags, "mode=1777,size=%d" % header["tmp_size"])
    _mount("tmpfs", "/dev/shm", "tmpfs", flags, "mode=1777,size=%d" % header["tmp_size"])
    _loopback_up()
    init = os.fork()
    if init == 0:
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)
        return _init(sock, (stdin_r, stdout_w, stderr_w), header["cpu"])
    for fd in (stdin_r, stdout_w, stderr_w):
        os.close(fd)
    while True:
        try:
            _, status = os.waitpid(init, 0)
            break
        except InterruptedError:
            continue
    rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    try:
        sock.send(json.dumps({"rc": rc, "init_exited": time.monotonic()}).encode())
        msg, _ = _recv(sock)
        if msg:
            req = json.loads(msg)
            paths = _all_files("/workspace") if req.get("all") else req["fetch"]
            files, notes = _fetch(paths, req["budget"])
            _send_files(sock, files, notes)
    except OSError:
        pass
    os._exit(0)


def _serve(sock):
    """Forks a keeper per 'prepare' message; returns only in a run's program process."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # keepers are reaped by the kernel
    while True:
        msg, fds = _recv(sock, 4)
        if not msg:
            os._exit(0)
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            continue
        header = json.loads(msg)
        pid = os.fork()
        if pid == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                spec = _keeper(header, fds)
            except BaseException:
                import traceback
                traceback.print_exc()
                os._exit(70)
            return spec
        for fd in fds:
            os.close(fd)


def _exit_status(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def _finish(status, main):
    """What the interpreter does at exit that a program can observe, without tearing down the pre-imported
    modules (that alone costs more than the whole run): join threads, atexit, finalise the program's own
    objects (unclosed files get flushed), flush stdio. 120 if stdout cannot be flushed, as CPython."""
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        import atexit
        atexit._run_exitfuncs()
    except SystemExit as e:
        status = _exit_status(e)
    except BaseException as e:
        sys.excepthook(type(e), e, e.__traceback__)
    try:
        main.__dict__.clear()
        sys.modules.pop("__main__", None)
        gc.collect()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            if stream is sys.stdout and status == 0:
                status = 120
    return status


def _close_inherited_fds(keep: int) -> None:
    """Only the socket to the server survives: nothing else of the template's start-up reaches a run."""
    for fd in range(3, 1024):
        if fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _exec_program(spec):
    """Replace the program process with `spec["argv"]` (languages other than python); never returns."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # python ignores them; exec'd programs get the default
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as e:
        os.write(2, ("%s: %s\n" % (spec["argv"][0], e.strerror)).encode())
    os._exit(127)


def _python_main(spec):
    """The interpreter state `python3 main.py` starts with: environment, argv, sys.path[0], a fresh __main__."""
    os.environ.clear()
    os.environ.update(spec["env"])
    path = "/workspace/" + spec["source"]
    sys.argv = [spec["source"], *spec.get("args", [])]
    sys.path[0] = "/workspace"
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    main.__cached__ = None
    sys.modules["__main__"] = main
    return path, main


def serve_forever(server_fd):
    """Fork runs for the server on `server_fd`. Returns only in a python run's program process: the script's
    path and its fresh __main__ module. The caller runs it at module level: the program's stack then has one
    frame (this module's) above it, as when this was a string, so recursion limits bite at the same depth."""
    _close_inherited_fds(server_fd)
    gc.freeze()  # forked runs then neither scan nor copy the pre-imported objects when they collect
    spec = _serve(socket.socket(fileno=server_fd))
    if spec.get("argv"):
        _exec_program(spec)
    return _python_main(spec)


if __name__ == "__main__":
    _path, _main = serve_forever(int(sys.argv[1]))
    _status = 0
    try:
        with open(_path, "rb") as _f:
            _src = _f.read()
        try:
            _code = compile(_src, _path, "exec")
        except SyntaxError as _e:
            _e.__traceback__ = None
            raise
        del _src
        exec(_code, _main.__dict__)
    except SystemExit as _e:
        _status = _exit_status(_e)
    except BaseException as _e:
        if _e.__traceback__ is not None and _e.__traceback__.tb_frame.f_globals is globals():
            _e.__traceback__ = _e.__traceback__.tb_next
        sys.excepthook(type(_e), _e, _e.__traceback__)
        _status = 1
    os._exit(_finish(_status, _main))
