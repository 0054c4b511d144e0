#!/usr/bin/env python3
"""Generate scripts/docker/seccomp-sandbox.json, the seccomp profile of the sandbox container.

Why a profile of our own: Docker's default profile refuses what bubblewrap must do to build a sandbox (pivot_root
always; unshare/setns/mount and clone with namespace flags unless the container holds CAP_SYS_ADMIN), and
`seccomp=unconfined` would open every syscall to the untrusted code as well.

Design: allow-list. Every syscall named in the Linux UAPI headers (x86_64 and the generic table used by aarch64),
plus a few newer ones libc may call, minus the DENIED set below: syscalls no sandboxed program or the server needs
and that are classic kernel-exploit or container-escape paths. Unknown (newer) syscalls answer ENOSYS so programs
fall back to older calls; denied ones answer EPERM; io_uring answers ENOSYS so runtimes (libuv) fall back to epoll.
32-bit compat ABIs (x86, x32, arm) are left out: nothing in the image needs them and they add kernel surface.

Run: python3 scripts/docker/make_seccomp_profile.py [--headers /usr/include] > scripts/docker/seccomp-sandbox.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

EPERM = 1
ENOSYS = 38

DENIED: dict[str, str] = {
    # loading code into the kernel / replacing it
    "init_module": "kernel modules", "finit_module": "kernel modules", "delete_module": "kernel modules",
    "create_module": "kernel modules", "query_module": "kernel modules", "get_kernel_syms": "kernel modules",
    "kexec_load": "kexec", "kexec_file_load": "kexec", "reboot": "reboot",
    # the 'shocker' escape: file handles bypass the mount namespace
    "open_by_handle_at": "file handles", "name_to_handle_at": "file handles",
    # large kernel attack surface, used by most public kernel exploits
    "bpf": "eBPF", "perf_event_open": "perf", "userfaultfd": "exploit primitive (race widening)",
    "keyctl": "kernel keyring (not namespaced)", "add_key": "kernel keyring", "request_key": "kernel keyring",
    "fsopen": "new mount API (CVE-2022-0185)", "fsconfig": "new mount API", "fsmount": "new mount API",
    "fspick": "new mount API", "move_mount": "new mount API", "open_tree": "new mount API",
    "mount_setattr": "new mount API",
    "modify_ldt": "x86 LDT", "iopl": "port I/O", "ioperm": "port I/O",
    # host-global state
    "settimeofday": "clock", "clock_settime": "clock", "clock_adjtime": "clock", "stime": "clock",
    "swapon": "swap", "swapoff": "swap", "acct": "process accounting", "quotactl": "quota",
    "quotactl_fd": "quota", "lookup_dcookie": "profiling", "syslog": "kernel log", "vhangup": "tty",
    "nfsservctl": "nfsd", "uselib": "a.out loader", "_sysctl": "sysctl syscall", "fanotify_init": "fanotify",
    "kcmp": "kernel pointer comparison",
}
NOSYS: set[str] = {"io_uring_setup", "io_uring_enter", "io_uring_register"}
# Newer than the headers this was generated from, harmless, and called by newer libcs.
EXTRA_ALLOWED = {"fchmodat2", "cachestat", "futex_wake", "futex_wait", "futex_requeue", "map_shadow_stack"}

_DEFINE = re.compile(r"^#define\s+__NR(?:3264)?_([a-z0-9_]+)\s+", re.MULTILINE)


def syscall_names(headers: Path) -> set[str]:
    tables = [headers / "x86_64-linux-gnu/asm/unistd_64.h", headers / "asm-generic/unistd.h"]
    missing = [str(t) for t in tables if not t.is_file()]
    if missing:
        raise SystemExit(f"missing syscall headers {missing}: apt-get install linux-libc-dev")
    names: set[str] = set()
    for table in tables:
        names.update(_DEFINE.findall(table.read_text()))
    names.discard("syscalls")  # __NR_syscalls is the table size, not a syscall
    return names


def build_profile(names: set[str]) -> dict:
    allowed = sorted((names | EXTRA_ALLOWED) - set(DENIED) - NOSYS)
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": ENOSYS,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {"names": sorted(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            {"names": sorted(NOSYS), "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headers", type=Path, default=Path("/usr/include"), help="UAPI include directory")
    args = parser.parse_args()
    print(json.dumps(build_profile(syscall_names(args.headers)), indent=1))


if __name__ == "__main__":
    main()
