#!/usr/bin/env bash
# One device call: the VLM benchmark (benchmarks/gpu/vlm_bench.py) at Qwen2.5-VL-3B shapes on one GPU.
#   run: bash benchmarks/gpu/vlm_bench.sh [vlm_bench.py args]      carry: [".whl", ".whl_tf"]
# .whl/ (benchmarks/gpu/fetch_wheels.sh) holds agentgym's pure-Python dependencies; .whl_tf/ a transformers wheel
# (5.24, what the CPU tests run) used when the machine's own is older.
set -euo pipefail
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT" /tmp/site
PIP="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade"
$PIP --target /tmp/site .whl/*.whl 2>&1 | grep -v -i warning | tail -3 || true
export PYTHONPATH="/tmp/site:$PWD"
if ! python3 -c "import transformers, sys; sys.exit(tuple(map(int, transformers.__version__.split('.')[:2])) < (5, 24))"; then
  mkdir -p /tmp/site_tf && $PIP --target /tmp/site_tf .whl_tf/*.whl 2>&1 | grep -v -i warning | tail -3 || true
  export PYTHONPATH="/tmp/site_tf:$PYTHONPATH"
fi
python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt"
python3 benchmarks/gpu/vlm_bench.py --out "$OUT" "$@" 2>&1 | grep -v -i "warn" | tee "$OUT/vlm_bench.log"
