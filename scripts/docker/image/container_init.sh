#!/bin/sh
# Container entry (PID 1 is tini): the few privileged steps that let the sandbox run inside Docker, then give
# CAP_SYS_ADMIN up for good and exec sandbox_server/start.sh (the start-up script shared with native runs).
#
# Needs the container settings of docker-compose.yml (cap_add SYS_ADMIN, the seccomp profile, a private cgroup
# namespace). Each step says why; when one fails the server still starts its own checks and refuses to run
# with a clear message rather than running unconfined.
set -eu
warn() { echo "container_init: $*" >&2; }
START=/opt/agentgym/sandbox_server/start.sh

if [ "${1:-}" = --after-drop ]; then
  # setpriv cannot drop a capability without CAP_SETPCAP and may not say so: check before running any server code.
  shift
  bnd="$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)"
  if [ $(( (0x$bnd >> 21) & 1 )) -ne 0 ]; then
    warn "CAP_SYS_ADMIN is still held after dropping it (is SETPCAP in cap_add?); refusing to start the server with it"
    exit 1
  fi
  exec "$START" "$@"
fi

if setpriv -d 2>/dev/null | grep -q '^Capability bounding set:.*sys_admin'; then
  # 1. Docker mounts the (namespaced) cgroup hierarchies read-only; the server creates one child group per run.
  #    With a private cgroup namespace these mounts show only this container's own subtree.
  grep -E ' - cgroup2? ' /proc/self/mountinfo | awk '{print $5}' | while read -r mnt; do
    mount -o remount,bind,rw "$mnt" || warn "cannot make $mnt writable"
  done
  # 2. The kernel lets a user namespace (bubblewrap's) mount a new /proc only if a fully visible proc is already
  #    mounted; Docker's /proc has masked paths. A pid-only proc instance (no /proc/sys, kcore, keys...) satisfies
  #    the rule without unmasking anything (kernels >= 5.8; older ones need security_opt systempaths=unconfined).
  mkdir -p /run/agentgym && chmod 0700 /run/agentgym && mkdir -p /run/agentgym/proc
  mount -t proc -o subset=pid,nosuid,nodev,noexec proc /run/agentgym/proc \
    || warn "cannot mount a pid-only proc (kernel < 5.8?); use security_opt systempaths=unconfined"
  # 3. bwrap --disable-userns sets user.max_user_namespaces inside the sandbox's own user namespace through
  #    /proc/sys/user, which Docker mounts read-only with the rest of /proc/sys. Only that directory is reopened.
  if [ -d /proc/sys/user ] && ! [ -w /proc/sys/user/max_user_namespaces ]; then
    { mount --bind /proc/sys/user /proc/sys/user && mount -o remount,bind,rw /proc/sys/user; } \
      || warn "cannot make /proc/sys/user writable"
  fi
  # 4. Nothing after this point may mount anything: drop CAP_SYS_ADMIN from every set, for this process tree.
  exec setpriv --bounding-set -sys_admin --inh-caps -sys_admin -- "$0" --after-drop "$@"
fi
warn "no CAP_SYS_ADMIN: skipping the cgroup/proc preparation (see docker-compose.yml for the settings)"
exec "$START" "$@"
