#!/usr/bin/env bash
# GRPO actor-update throughput and MFU for a Qwen2.5-0.5B-shaped model (random init) on one GPU.
# Run on the device machine from the repository root:  bash benchmarks/gpu/trainer_update.sh
# Needs torch (CUDA), transformers, pydantic, pyyaml, numpy; not Ray (the single rank runs in-process with a
# 1-rank NCCL process group, so the FSDP2 + bf16 mixed-precision path is what is measured).
set -euo pipefail
OUT="${OUT:-/tmp/trainer_bench_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY'
import importlib, sys
missing = [m for m in ("torch", "transformers", "pydantic", "yaml", "numpy") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing python packages on this machine: {missing}; carry their wheels and pip install --target")
PY
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# 32 prompts x 8 samples, ~1k-token multi-turn responses: ~300k tokens per step, 4 optimizer steps per step.
python3 benchmarks/trainer_bench.py --device cuda --size 0.5b --prompts 32 --n 8 --prompt-len 256 \
  --response-len 1024 --minibatches 4 --max-token-len 16384 --warmup 1 --steps 3 --out "$OUT" "$@" \
  2>&1 | tee "$OUT/trainer_bench_0.5b.txt"
