#!/usr/bin/env bash
# Build the sandbox service image from the top-level Dockerfile with this host's package mirrors, on host networking.
#   scripts/docker/build_image.sh [extra docker build args...]
# Environment: IMAGE_TAG (default agentgym-sandbox:latest); BASE_IMAGE (default: build/reuse the local debootstrap
# image via build_base_image.sh; set BASE_IMAGE=debian:bookworm-slim to pull the public one instead).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { echo "[build_image] $*" >&2; }

TAG="${IMAGE_TAG:-agentgym-sandbox:latest}"
BASE="${BASE_IMAGE:-$("$here/build_base_image.sh")}"

declare -A m
while IFS='=' read -r k v; do m[$k]="$v"; done < <("$here/host_mirrors.sh")
extra_ca=""
for f in ${m[EXTRA_CA_FILES]:-}; do extra_ca+="$(cat "$f")"$'\n'; done

log "building $TAG from $BASE (apt: ${m[DEBIAN_MIRROR]}, pip: ${m[PIP_INDEX_URL]})"
# The classic builder: works with every engine version and needs no buildx plugin.
DOCKER_BUILDKIT=0 docker build --network host \
  --build-arg BASE_IMAGE="$BASE" \
  --build-arg DEBIAN_MIRROR="${m[DEBIAN_MIRROR]}" \
  --build-arg DEBIAN_SECURITY_MIRROR="${m[DEBIAN_SECURITY_MIRROR]}" \
  --build-arg PIP_INDEX_URL="${m[PIP_INDEX_URL]}" \
  --build-arg EXTRA_CA_CERTS="$extra_ca" \
  -t "$TAG" "$@" "$root" >&2
# Superseded builds of this image (untagged now) would otherwise pile up, 2 GB each, on a CI machine's engine.
docker image prune -f --filter label=org.agentgym.image=sandbox >/dev/null || true
echo "$TAG"
