#!/usr/bin/env bash
# Print the package mirrors this machine is configured to use, as KEY=VALUE lines (shell- and Python-parsable):
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR  from /etc/apt/sources.list and /etc/apt/sources.list.d/*.{list,sources}
#   PIP_INDEX_URL                          from `pip config` / PIP_INDEX_URL (pypi.org when unset)
#   CA_BUNDLE                              the CA bundle pip trusts here (PIP_CERT / pip config `cert`), if any
#   EXTRA_CA_FILES                         CAs added locally (/usr/local/share/ca-certificates), e.g. a proxy's
# Image builds pass them as build arguments so that a container build fetches from the same places as this host;
# the Dockerfile's own defaults are the public Debian and PyPI addresses.
set -euo pipefail

first_uri() {  # $1: regex the URI path must match (e.g. '/debian/?$')
  local re="$1" f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    # deb822: "URIs: a b" lines of enabled stanzas of Types: deb
    awk 'BEGIN{RS=""; FS="\n"} /(^|\n)Types:[^\n]*deb([ \t]|$)/ && !/(^|\n)Enabled: *no/ {
           for (i=1;i<=NF;i++) if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); n=split($i, u, /[ \t]+/); for (j=1;j<=n;j++) print u[j] } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' "$f"
  done | cat
} 2>/dev/null

pick() { first_uri | grep -E "$1" | head -n 1 || true; }

deb="$(pick '/debian/?$')"
sec="$(pick '/debian-security/?$')"
echo "DEBIAN_MIRROR=${deb:-http://deb.debian.org/debian}"
echo "DEBIAN_SECURITY_MIRROR=${sec:-http://deb.debian.org/debian-security}"

pip_cfg() { python3 -m pip config get "$1" 2>/dev/null | head -n 1 || true; }
index="${PIP_INDEX_URL:-$(pip_cfg global.index-url)}"
echo "PIP_INDEX_URL=${index:-https://pypi.org/simple}"
cert="${PIP_CERT:-$(pip_cfg global.cert)}"
if [ -z "$cert" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then cert=/etc/ssl/certs/ca-certificates.crt; fi
echo "CA_BUNDLE=${cert}"
extra="$(find /usr/local/share/ca-certificates -type f -name '*.crt' 2>/dev/null | sort | tr '\n' ' ' | sed 's/ $//')"
echo "EXTRA_CA_FILES=${extra}"
