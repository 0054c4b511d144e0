#!/usr/bin/env bash
# GPU memory per phase of a colocated GRPO step (rollout, old log-probs, update, weight sync), without and with the
# memory hand-over: A = KV cache kept + optimizer state on the GPU; B = the replica's KV cache released after the
# rollout (rollout.free_cache_engine, re-allocated after the weight sync) + optimizer state offloaded to the host
# between updates (actor.fsdp_config.optimizer_offload). One GPU, a random-init 0.5B model, the arithmetic task,
# 2 steps each (the second, warm, is reported). One device call, < 5 min:
#   bash benchmarks/gpu/memory_phases.sh [SIZE]      # carry [.whl, .whl_ray0] then [.whl, .whl_ray1] (see scale_bench.sh)
# Prints a table of memory/<phase>/{allocated,reserved}_gib (peak since the previous phase ended, max over ranks)
# and host RSS, plus the weight-sync seconds (B's include re-allocating the cache and re-capturing decode graphs);
# writes $OUT/memory_phases.json.
set -uo pipefail
SIZE="${1:-0.5b}"
FINAL="${OUT:-/tmp/memory_phases_out}"
mkdir -p "$FINAL"
. benchmarks/gpu/device_env.sh
device_env ray
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$FINAL/gpu.txt"
arithmetic_work "$SIZE" 64
run() {  # NAME FREE_CACHE OFFLOAD
  timeout 200 python3 -m agentgym.trainer.main_ppo agentgym_envs/arithmetic/train.yaml \
    actor_rollout_ref.model.path="$MODEL" data.train_files="$WORK/train.jsonl" \
    trainer.device=cuda trainer.use_ray=true trainer.n_gpus_per_node=1 actor_rollout_ref.rollout.placement=colocated \
    actor_rollout_ref.rollout.free_cache_engine="$2" actor_rollout_ref.actor.fsdp_config.optimizer_offload="$3" \
    data.train_batch_size=8 actor_rollout_ref.rollout.n=8 actor_rollout_ref.actor.ppo_mini_batch_size=8 \
    data.max_response_length=256 actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3 \
    actor_rollout_ref.model.use_remove_padding=true \
    "actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: bf16, reduce_dtype: fp32}" \
    trainer.total_training_steps=2 trainer.save_freq=-1 trainer.default_local_dir="$WORK/run_$1" \
    "trainer.logger=[console,jsonl]" ray_kwargs.ray_init.num_cpus=8 > "$FINAL/$1.log" 2>&1
  echo "$1: exit $? (log $FINAL/$1.log)"; tail -5 "$FINAL/$1.log"
}
run kept false false
run handed_over true true
python3 - "$WORK" "$FINAL/memory_phases.json" <<'PY'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), sys.argv[2]
result = {}
for name in ("kept", "handed_over"):
    path = work / f"run_{name}" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.open()] if path.exists() else []
    result[name] = {k: v for k, v in (rows[-1] if rows else {}).items()
                    if k.startswith("memory/") or k.startswith("timing_s/")}
json.dump(result, open(out, "w"), indent=1)
keys = sorted({k for r in result.values() for k in r if k.startswith("memory/")}) + ["timing_s/weight_sync", "timing_s/step"]
print(f"{'figure (warm step)':44s} {'A kept':>10s} {'B handed over':>14s}")
for key in keys:
    a, b = (result[n].get(key) for n in ("kept", "handed_over"))
    fmt = lambda v: f"{v:10.3f}" if isinstance(v, (int, float)) else f"{'-':>10s}"
    print(f"{key:44s} {fmt(a)} {fmt(b):>14s}")
PY
