"""The sandbox's /etc: what the runtimes read, not the host's whole /etc.

Host entries the toolchains need are bound read-only at the same path (the dynamic loader's cache, Debian's
alternatives symlinks behind cc/c++/java, language config dirs, CA certificates, time zone). Identity and
name-service files are written fresh for the sandbox, so no host user, group, host name or host entry shows.
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

# Relative to /etc; shell-style patterns allowed. Missing entries are skipped.
HOST_ENTRIES: tuple[str, ...] = (
    "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
    "ssl", "ca-certificates", "ca-certificates.conf",
    "localtime", "timezone", "os-release", "debian_version", "locale.alias",
    "protocols", "services", "mime.types", "gai.conf", "host.conf", "mtab", "shells", "inputrc", "magic",
    "java-*", "R", "php", "perl", "python3", "python3.*", "fonts", "racket", "mono", "ldc2.conf",
)

GENERATED: dict[str, str] = {
    "passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1\tlocalhost\n127.0.1.1\tsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "hostname": "sandbox\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n"
                     "protocols: files\nservices: files\nethers: files\nrpc: files\n",
}


def host_etc_args(etc: str = "/etc", patterns: Sequence[str] = HOST_ENTRIES) -> list[str]:
    """bwrap args binding the chosen host entries (symlinks recreated as symlinks)."""
    args = ["--dir", "/etc"]
    seen: set[str] = set()
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(etc, pattern))):
            name = os.path.basename(path)
            if name in seen or name in GENERATED:
                continue
            seen.add(name)
            dest = "/etc/" + name
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), dest]
            elif os.path.exists(path):
                args += ["--ro-bind", path, dest]
    return args


def generated_files() -> dict[str, bytes]:
    """/etc path -> content, copied into the sandbox's own root (bwrap --file) at each start."""
    return {"/etc/" + name: text.encode() for name, text in GENERATED.items()}
