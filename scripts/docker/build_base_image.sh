#!/usr/bin/env bash
# Build a minimal Debian base image locally (no registry needed) and print its tag on stdout.
#
#   debootstrap --variant=minbase <suite> from this host's configured Debian mirror  ->  tarball  ->  docker import
#
# Cached twice: the image itself (skipped when the tag exists) and the rootfs tarball (re-imported when the engine's
# storage was wiped but the tarball survives, e.g. a fresh dockerd on the same CI machine).
# Environment: BASE_IMAGE_TAG (default agentgym/debian-base:<suite>), DEBIAN_SUITE (default bookworm),
# DEBIAN_MIRROR (default: from host_mirrors.sh), AGENTGYM_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/agentgym),
# REBUILD_BASE=1 to ignore both caches.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "[build_base_image] $*" >&2; }

SUITE="${DEBIAN_SUITE:-bookworm}"
TAG="${BASE_IMAGE_TAG:-agentgym/debian-base:$SUITE}"
if [ -z "${DEBIAN_MIRROR:-}" ]; then
  DEBIAN_MIRROR="$("$here/host_mirrors.sh" | sed -n 's/^DEBIAN_MIRROR=//p')"
fi
CACHE_DIR="${AGENTGYM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentgym}"
TARBALL="$CACHE_DIR/debian-$SUITE-minbase.tar"

if [ "${REBUILD_BASE:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  log "cached image $TAG"; echo "$TAG"; exit 0
fi

if [ "${REBUILD_BASE:-0}" = 1 ] || [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null 2>&1 || { log "debootstrap missing: apt-get install debootstrap"; exit 1; }
  [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
  mkdir -p "$CACHE_DIR"
  rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR (a few minutes)"
  keyring=()
  [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  debootstrap --variant=minbase "${keyring[@]}" "$SUITE" "$rootfs" "$DEBIAN_MIRROR" >&2
  # What docker images usually drop: package caches, apt lists, logs.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
  rm -rf "$rootfs"; trap - EXIT
  log "rootfs tarball: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
  log "re-importing cached tarball $TARBALL"
fi

docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
  -m "debootstrap --variant=minbase $SUITE" "$TARBALL" "$TAG" >&2
echo "$TAG"
