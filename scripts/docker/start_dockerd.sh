#!/usr/bin/env bash
# Make a Docker engine available on this machine, for building and testing the sandbox image.
#
# - Installs Debian's docker.io (engine + containerd + runc), docker-compose (v1) and debootstrap when missing;
#   also the compose v2 plugin where the configured Debian release ships one.
# - Starts dockerd WITHOUT its default bridge and with iptables off: containers can only use host networking
#   (`docker build --network host`, compose `network_mode: host`), so no traffic ever goes to a private bridge range.
# - Gives each container its own cgroup namespace (the default on cgroup v2 hosts; set here for v1 hosts too): the
#   sandbox container then sees, and can only ever mount, its own cgroup subtree.
# - Idempotent: returns at once when an engine already answers on the socket.
#
# Environment: DOCKER_HOST_SOCKET (default /var/run/docker.sock), DOCKERD_LOG (default /var/log/agentgym-dockerd.log),
# DOCKERD_DATA_ROOT (default /var/lib/docker), DOCKERD_WAIT_S (default 60).
set -euo pipefail

SOCK="${DOCKER_HOST_SOCKET:-/var/run/docker.sock}"
LOG="${DOCKERD_LOG:-/var/log/agentgym-dockerd.log}"
DATA_ROOT="${DOCKERD_DATA_ROOT:-/var/lib/docker}"
WAIT_S="${DOCKERD_WAIT_S:-60}"

log() { echo "[start_dockerd] $*" >&2; }

engine_answers() { docker -H "unix://$SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root (dockerd needs it); try: sudo $0"; exit 1
fi

if command -v docker >/dev/null 2>&1 && engine_answers; then
  log "engine already running on $SOCK"; exit 0
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || { log "no dockerd and no apt-get to install ${missing[*]}"; exit 1; }
  log "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
# Compose v2 is a CLI plugin; Debian ships it only from trixie on (package docker-compose >= 2 or docker-compose-v2).
if ! docker compose version >/dev/null 2>&1; then
  for pkg in docker-compose-v2 docker-compose-plugin; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >&2 || true
      break
    fi
  done
fi

# dockerd needs the cgroup hierarchies mounted (a bare VM or chroot may lack them).
if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && ! mountpoint -q /sys/fs/cgroup/memory 2>/dev/null; then
  if command -v cgroupfs-mount >/dev/null 2>&1; then cgroupfs-mount || true; fi
fi

mkdir -p "$(dirname "$LOG")" "$DATA_ROOT"
log "starting dockerd (no default bridge, iptables off), log: $LOG"
# setsid + nohup: the engine outlives the shell (and the test) that started it.
setsid nohup dockerd \
  --host "unix://$SOCK" \
  --data-root "$DATA_ROOT" \
  --bridge=none \
  --iptables=false \
  --ip-masq=false \
  --default-cgroupns-mode=private \
  >>"$LOG" 2>&1 < /dev/null &

for _ in $(seq 1 "$WAIT_S"); do
  if engine_answers; then
    log "engine up: $(docker -H "unix://$SOCK" version --format '{{.Server.Version}}')"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within ${WAIT_S}s; last log lines:"
tail -n 30 "$LOG" >&2 || true
exit 1
