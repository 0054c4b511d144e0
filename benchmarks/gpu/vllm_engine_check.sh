#!/usr/bin/env bash
# Our VLLMEngine against a real vLLM server: starts `vllm serve` on a locally built tiny model (agentgym.models.build)
# as our launcher does (--logprobs-mode processed_logprobs, VLLM_SERVER_DEV_MODE=1 for the weight-reload routes) and
# runs the engine's multi-turn test (ids and logprobs checked against a direct forward of the served model, prefix
# cache hits reported with --enable-prompt-tokens-details) and its weight-update test (/collective_rpc
# update_config + reload_weights, /reset_prefix_cache, /pause and /resume where present; then logprobs from the new
# model), with AGENTGYM_VLLM_URL pointing the tests at it. This is the check that a given vLLM version supports
# the weight-reload path the engine uses.
#
# Needs a GPU machine with vLLM installed (pip install vllm). It has not been run by us: vLLM pins its own torch
# version, so it cannot be installed next to ours on the development machines.
#   bash benchmarks/gpu/vllm_engine_check.sh [PORT]      # DTYPE=float32 (default) | bfloat16 | float16
#   AGENTGYM_REAL_SERVER_ATOL (default 2e-2) is the logprob tolerance against the CPU forward.
set -euo pipefail
PORT="${1:-8123}"
DTYPE="${DTYPE:-float32}"
OUT_DIR="${OUT:-/tmp/vllm_engine_check}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
python3 -c "import vllm" 2>/dev/null || { echo "vllm is not installed here: pip install vllm" >&2; exit 2; }
python3 -c "import vllm; print('vllm', vllm.__version__)" | tee "$OUT_DIR/version.txt"
WORK=$(mktemp -d)
MODEL=$(python3 -c "from agentgym.models import build_tiny_model; print(build_tiny_model('$WORK/models', size='tiny'))")
# Its own session, so the whole server (engine core and workers too) stops with one signal.
VLLM_SERVER_DEV_MODE=1 setsid vllm serve "$MODEL" --host 127.0.0.1 --port "$PORT" --dtype "$DTYPE" \
  --logprobs-mode processed_logprobs --enable-prompt-tokens-details --gpu-memory-utilization 0.3 \
  --max-model-len 2048 >"$OUT_DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM -- -"$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { echo "the server exited; see $OUT_DIR/server.log" >&2; tail -30 "$OUT_DIR/server.log"; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "the server was not healthy in 600s" >&2; exit 1; }
AGENTGYM_VLLM_URL="http://127.0.0.1:$PORT" python3 -m pytest tests/engines/test_vllm_engine.py -q \
  -k "multi_turn or weight_update_changes" -p no:cacheprovider 2>&1 | tee "$OUT_DIR/pytest.log" | tail -20
