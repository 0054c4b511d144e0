"""Whether the servers can read the folder the disk weight path writes to.

Why: the disk path (`update_weights(state_dict)` on a server engine) writes safetensors into `weight_sync_dir` on
this machine and asks every server to load that path. A server on another machine reads its own filesystem at
that path: unless the folder is on a filesystem both machines mount, it loads nothing (or stale files), and the
failure shows up far from its cause. So before the first write the folder's filesystem is looked up in
/proc/mounts; a server that is not on this machine with a folder on a local filesystem is an error that says so.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from agentgym.rollout.engines.base import EngineError

# Filesystems that several machines mount (FUSE filesystems are taken as shared: sshfs, gcsfuse, juicefs, ...).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "cephfs", "glusterfs", "9p",
    "virtiofs", "afs", "orangefs", "wekafs", "panfs", "pvfs2", "ocfs2", "gfs2",
})


def filesystem_type(path: str | os.PathLike[str], mounts: str = "/proc/mounts") -> str | None:
    """The type of the filesystem holding `path` (the longest mount point above it), or None when unknown."""
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > best[0]):
            best = (len(point), fields[2])
    return best[1] if best else None


def is_shared_filesystem(fs_type: str | None) -> bool:
    return fs_type is not None and (fs_type in NETWORK_FILESYSTEMS or fs_type.startswith("fuse"))


def _local_addresses() -> set[str]:
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    addresses = {"127.0.0.1", "::1"}
    for name in names:
        try:
            addresses.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except OSError:
            continue
    return addresses | names


def is_this_machine(url: str) -> bool:
    """Whether `url`'s host is this machine (loopback, or one of its names or addresses)."""
    host = urlsplit(url).hostname or ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    local = _local_addresses()
    if host in local:
        return True
    try:
        return any(info[4][0] in local for info in socket.getaddrinfo(host, None))
    except OSError:
        return False  # a host this machine cannot resolve is not this machine


def check_weight_dir_shared(directory: str, urls: Sequence[str], *, declared_shared: bool | None,
                            server_kind: str, mounts: str = "/proc/mounts") -> None:
    """Raise EngineError when a server elsewhere cannot read `directory` (see the module docstring).

    `declared_shared`: True trusts the folder (a shared mount this check cannot recognise), False always raises
    for servers elsewhere, None decides by the filesystem type."""
    remote = [u for u in urls if not is_this_machine(u)]
    if not remote or declared_shared:
        return
    fs_type = filesystem_type(directory, mounts)
    if declared_shared is None and is_shared_filesystem(fs_type):
        return
    key = server_kind.lower()
    raise EngineError(
        f"the disk weight path writes to weight_sync_dir={directory}, on this machine's "
        f"{fs_type or 'unknown'} filesystem, but {server_kind} server(s) {remote} run on other machines and "
        "cannot read files written there. Fix: set engine_kwargs."
        f"{key}.weight_sync_dir to a folder of a filesystem every machine mounts at the same path (NFS, "
        f"Lustre, ...); if {directory} is shared in a way this check does not recognise, set engine_kwargs."
        f"{key}.weight_sync_dir_shared=true; or have the weights broadcast instead of written to disk: SGLang "
        "servers on a separate rollout pool (actor_rollout_ref.rollout.placement=separate with "
        "rollout.weight_sync=distributed, its default there), or the in-process engine (rollout.name=transformers) "
        "on a separate pool.")
