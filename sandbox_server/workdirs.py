"""Run work dirs, each its own tmpfs where the server may mount one.

A bind mount shows its source's path inside its filesystem in /proc/self/mountinfo; a work dir that is
the root of its own tmpfs shows only `/`, so the sandbox never learns where the run lives on the host.
Without CAP_SYS_ADMIN (the Docker setup drops it after start-up) work dirs are plain directories.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(path: Path, size_bytes: int) -> None:
    options = f"mode=0700,size={size_bytes}".encode()
    if _libc.mount(b"sandbox", str(path).encode(), b"tmpfs", ctypes.c_ulong(0), options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


def _unmount(path: str) -> None:
    if _libc.umount2(path.encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
            raise OSError(err, os.strerror(err), path)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = os.path.realpath(root)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + os.sep):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_tree(root: Path) -> None:
    """Unmount every work dir tmpfs below `root`, then delete it (best effort, like rmtree(ignore_errors))."""
    try:
        for point in mounts_under(root):
            _unmount(point)
    except OSError:
        pass
    shutil.rmtree(root, ignore_errors=True)


class WorkDirs:
    """Creates and removes run work dirs below `root`."""

    def __init__(self, root: Path, size_bytes: int, mount: bool = True):
        self.root = root
        self.size_bytes = size_bytes
        self.own_mounts = mount and self._probe()

    def _probe(self) -> bool:
        probe = self.root / ".mount-probe"
        probe.mkdir(exist_ok=True)
        try:
            _mount_tmpfs(probe, 1 << 20)
        except OSError:
            return False
        finally:
            remove_tree(probe)
        return True

    def create(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(mode=0o700)
        if self.own_mounts:
            try:
                _mount_tmpfs(path, self.size_bytes)
            except OSError:
                path.rmdir()
                raise
        return path

    def remove(self, path: Path) -> None:
        remove_tree(path)
