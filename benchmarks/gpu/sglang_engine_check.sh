#!/usr/bin/env bash
# Our SGLangEngine against a real SGLang server: starts `python -m sglang.launch_server` on a locally built tiny
# model (agentgym.models.build) and runs the engine's multi-turn test (ids and logprobs checked against a direct
# forward of the served model, one server per trajectory, radix-cache hits) and its weight-update test
# (/update_weights_from_disk, then logprobs from the new model), with AGENTGYM_SGLANG_URL pointing the tests at it.
#
# Needs a GPU machine with SGLang installed (pip install "sglang[all]"). It has not been run by us: SGLang pins its
# own torch version, so it cannot be installed next to ours on the development machines.
#   bash benchmarks/gpu/sglang_engine_check.sh [PORT]      # DTYPE=float32 (default) | bfloat16 | float16
#   AGENTGYM_REAL_SERVER_ATOL (default 2e-2) is the logprob tolerance against the CPU forward.
set -euo pipefail
PORT="${1:-30123}"
DTYPE="${DTYPE:-float32}"
OUT_DIR="${OUT:-/tmp/sglang_engine_check}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
python3 -c "import sglang" 2>/dev/null || { echo "sglang is not installed here: pip install 'sglang[all]'" >&2; exit 2; }
WORK=$(mktemp -d)
MODEL=$(python3 -c "from agentgym.models import build_tiny_model; print(build_tiny_model('$WORK/models', size='tiny'))")
# Its own session, so the whole server (scheduler and detokenizer processes too) stops with one signal.
setsid python3 -m sglang.launch_server --model-path "$MODEL" --host 127.0.0.1 --port "$PORT" --dtype "$DTYPE" \
  --mem-fraction-static 0.3 >"$OUT_DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM -- -"$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { echo "the server exited; see $OUT_DIR/server.log" >&2; tail -30 "$OUT_DIR/server.log"; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "the server was not healthy in 600s" >&2; exit 1; }
AGENTGYM_SGLANG_URL="http://127.0.0.1:$PORT" python3 -m pytest tests/engines/test_sglang_engine.py -q \
  -k "multi_turn or weight_update_changes" -p no:cacheprovider 2>&1 | tee "$OUT_DIR/pytest.log" | tail -20
