#!/bin/sh
# Start-up script for native and Docker runs: prepare the host state the sandbox needs, then exec the
# server with the given arguments (e.g. --host 0.0.0.0 --port 8080). The server itself re-checks
# everything and refuses to start with a clear message if isolation still cannot be set up.
set -eu

warn() { echo "sandbox start.sh: $*" >&2; }

# cgroup v2 inside a container is often mounted read-only; the server needs to create child groups.
if [ -f /sys/fs/cgroup/cgroup.controllers ] && [ ! -w /sys/fs/cgroup/cgroup.procs ]; then
    mount -o remount,rw /sys/fs/cgroup 2>/dev/null \
        || warn "/sys/fs/cgroup is read-only and cannot be remounted (needs CAP_SYS_ADMIN or a writable cgroupns)"
fi

# bubblewrap runs unprivileged and needs user namespaces.
if [ -r /proc/sys/user/max_user_namespaces ] && [ "$(cat /proc/sys/user/max_user_namespaces)" = "0" ]; then
    echo 10000 > /proc/sys/user/max_user_namespaces 2>/dev/null \
        || warn "user namespaces are disabled (user.max_user_namespaces=0) and cannot be enabled here"
fi
if [ -r /proc/sys/kernel/apparmor_restrict_unprivileged_userns ] \
        && [ "$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns)" = "1" ]; then
    warn "AppArmor restricts unprivileged user namespaces; run the container with --security-opt apparmor=unconfined"
fi

exec "${PYTHON:-python3}" -m sandbox_server "$@"
