#!/bin/sh
# Runs inside the image build (see the top-level Dockerfile): installs the OS packages and the server's Python
# dependencies in one layer, using the mirrors given as build arguments, and leaves no caches behind.
# Inputs (environment): DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, DEBIAN_SUITE, PIP_INDEX_URL, EXTRA_CA_CERTS;
# files next to this script: apt-packages.txt and requirements.txt when sandbox_server/ ships them.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"

# One sources file, whatever the base image came with (debian:*-slim uses deb822, debootstrap sources.list).
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
cat > /etc/apt/sources.list.d/debian.sources <<SOURCES
Types: deb
URIs: ${DEBIAN_MIRROR}
Suites: ${DEBIAN_SUITE} ${DEBIAN_SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_SECURITY_MIRROR}
Suites: ${DEBIAN_SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# The server's own needs, then the toolchains sandbox_server/apt-packages.txt lists (comments and blanks ignored).
pkgs="ca-certificates python3 python3-venv bubblewrap util-linux procps tini"
if [ -f "$here/apt-packages.txt" ]; then
  pkgs="$pkgs $(sed -e 's/#.*//' "$here/apt-packages.txt" | tr -s ' \t\r\n' ' ')"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $pkgs
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

# A TLS-intercepting proxy's CA (EXTRA_CA_CERTS, PEM text) is trusted for the pip step only, not left in the image.
ca_bundle=""
if [ -n "${EXTRA_CA_CERTS:-}" ]; then
  ca_bundle="$(mktemp)"
  cat /etc/ssl/certs/ca-certificates.crt > "$ca_bundle"
  printf '%s\n' "$EXTRA_CA_CERTS" >> "$ca_bundle"
fi

python3 -m venv /opt/venv
req="$here/requirements.txt"
if [ ! -f "$req" ]; then
  req="$(mktemp)"
  printf '%s\n' 'fastapi>=0.110' 'uvicorn>=0.29' 'httptools>=0.6' 'pydantic>=2.6' > "$req"
fi
PIP_CERT="${ca_bundle:-/etc/ssl/certs/ca-certificates.crt}" \
  /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --index-url "$PIP_INDEX_URL" -r "$req"
if [ -n "$ca_bundle" ]; then rm -f "$ca_bundle"; fi
find /opt/venv -name __pycache__ -prune -exec rm -rf {} +
