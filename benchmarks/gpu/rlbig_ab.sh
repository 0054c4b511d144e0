#!/usr/bin/env bash
# Before/after of the one-GPU GRPO step in one device call: the rlbig stage (2 warm steps, TORCH_LOGS=recompiles)
# on two source trees, the CUDA IPC weight hand-over check on the second, then the update-only stage on both
# while time is left. Usage, from the repository root on the device machine:
#   bash benchmarks/gpu/rlbig_ab.sh BASE_TREE NEW_TREE WHEEL_DIR
# AB_MODES="one_step_off async" also runs the new tree's rlbig step under those trainer.rollout_mode values
# (async with trainer.max_staleness=${AB_STALENESS:-2}), for issue 30's step-time ratios against the sync run.
# Each tree is a copy of the repository (agentgym, agentgym_envs, benchmarks, sandbox_server); give both this
# commit's benchmarks/gpu scripts so the harness is the same and only the library differs. WHEEL_DIR holds
# benchmarks/gpu/fetch_wheels.sh's wheels. Out: one archive of logs and JSON per run and report.txt in $OUT.
set -u
BASE=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd); WHEELS=$(cd "$3" && pwd)
OUT=${OUT:-/tmp/rlbig_ab_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ln -sfn "$WHEELS" "$BASE/.whl"; ln -sfn "$WHEELS" "$NEW/.whl"
stage() {  # name tree stage [extra grpo_step_bench.py arguments]
  local work=/tmp/work_$1_$3
  (cd "$2" && WORK=$work OUT=/tmp/final_$1_$3 TORCH_LOGS=recompiles RLBIG_ARGS="--steps ${AB_STEPS:-2} ${4:-}" \
     bash benchmarks/gpu/grpo_vs_trl.sh "$3" > "/tmp/stage_$1_$3.txt" 2>&1)
  echo "== $1 $3 rc=$? at $(( $(date +%s) - T0 )) s; recompiles logged: $(grep -c 'Recompiling function' "$work/log_$3.txt" 2>/dev/null)"
  grep -h "imports" "$work/imports.txt" 2>/dev/null
  grep -E "Error|error:" "$work/log_$3.txt" | tail -3
  cp "/tmp/stage_$1_$3.txt" "$work/" 2>/dev/null
  tar czf "$OUT/$1_$3.tgz" -C "$work" . 2>/dev/null
}
stage base "$BASE" rlbig-0.5b
stage new "$NEW" rlbig-0.5b
for mode in ${AB_MODES:-}; do
  extra="--set trainer.rollout_mode=$mode"; [ "$mode" = async ] && extra="$extra --set trainer.max_staleness=${AB_STALENESS:-2}"
  stage "new_$mode" "$NEW" rlbig-0.5b "$extra"
done
(cd "$NEW" && PYTHONPATH=/tmp/site:$PWD timeout 120 python3 benchmarks/gpu/weight_ipc_check.py --size 0.5b --out "$OUT" 2>&1 | tail -3)
for name in new base; do
  tree=$NEW; [ $name = base ] && tree=$BASE
  if [ $(( $(date +%s) - T0 )) -lt ${UPD_BEFORE_S:-240} ]; then stage $name "$tree" upd-0.5b; else echo "skip $name upd (time)"; fi
done
python3 - /tmp/work_* <<'PY' | tee "$OUT/report.txt"
import json, sys
from pathlib import Path
for work in sys.argv[1:]:
    for f in sorted(Path(work).glob("ours_*.json")):
        d = json.loads(f.read_text())
        g = d.get("grpo_step")
        if g:
            print(f"{Path(work).name}: rollout {g['rollout_s']:.2f} s ({g['rollout_generated_tokens_per_s']:.0f} tok/s), "
                  f"{g['tokens_per_step']:.0f} tokens/step")
            for i, s in enumerate(g["per_step"]):
                print(f"  step {i + 1}: {s['step_s']:.2f} s = rollout {s['rollout_s']:.2f} + old log-probs "
                      f"{s.get('old_log_prob_s', float('nan')):.3f} + update {s['update_s']:.3f} + sync {s.get('weight_sync_s', float('nan')):.3f}; "
                      f"graphs compiled {s.get('graphs_compiled', '-')}")
        u = d.get("update_only")
        if u:
            print(f"{Path(work).name}: update {u['update_tokens_per_s']:.0f} tok/s, MFU {u['update_mfu']:.3f}, "
                  f"old log-probs {u['old_log_prob_tokens_per_s']:.0f} tok/s, {u['max_memory_gib']:.1f} GiB")
PY
