#!/usr/bin/env bash
# Our GRPO step (multi-turn rollout with the code tool, old log-probs, FSDP2 update) vs TRL's GRPOTrainer, same
# model shapes, batch and lengths, on the device machine. Run from the repository root:
#   bash benchmarks/gpu/grpo_vs_trl.sh [STAGE ...]
# stages: upd-SIZE (our update on the TRL-shaped batch, blocks compiled), eager-SIZE (the same without torch.compile), trl-SIZE (TRL GRPOTrainer, same batch), rl-SIZE (a small
# full multi-turn GRPO step with the code tool), ours-SIZE (both of ours at the default batch: slow rollout),
# ray-SIZE (our update through Ray actors), rlbig-SIZE (the multi-turn rollout at 8 prompts x 8 samples, no update). Default: upd-0.5b trl-0.5b upd-1.5b trl-1.5b rl-0.5b ray-0.5b
# Set-up (every call): installs the wheels carried in .whl/ into /tmp/site (pydantic, jsonschema, fastapi, uvicorn,
# tenacity, trl, datasets, ...). Ray travels in two halves (.whl_ray0/ray.part00 in one call, .whl_ray1/ray.part01
# in the next call to the same warm machine; carry [.whl, .whl_ray0] then [.whl, .whl_ray1]: 64 MiB a call); each half is kept in /tmp/ray_parts and, once both are there, joined and
# installed. If TRL does not import with the image's transformers, .whl_tf/ (a newer transformers) is used for
# the TRL runs only. Results: $OUT/*.json, one log per stage, a table at the end.
set -uo pipefail
FINAL="${OUT:-/tmp/grpo_vs_trl_out}"
OUT=${WORK:-/tmp/grpo_vs_trl_work}  # everything here; $OUT (few files come back) gets summary, versions and one archive
mkdir -p "$OUT" "$FINAL"
. benchmarks/gpu/device_env.sh
device_env
export AGENTGYM_MODEL_DIR=/tmp/agentgym_models
TRL_PYTHONPATH="$PYTHONPATH"
if ! python3 -c "from trl import GRPOTrainer" >"$OUT/trl_import.txt" 2>&1; then
  if ls .whl_tf/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site_tf/transformers ]; then
    mkdir -p /tmp/site_tf && $PIP --target /tmp/site_tf .whl_tf/*.whl 2>&1 | grep -v -i warning | tail -3
  fi
  if [ -d /tmp/site_tf/transformers ]; then
    TRL_PYTHONPATH="/tmp/site_tf:$PYTHONPATH"
    echo "TRL needs a newer transformers than the image's: TRL runs use $(ls /tmp/site_tf | grep dist-info)" | tee -a "$OUT/trl_import.txt"
  fi
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  PYTHONPATH="$TRL_PYTHONPATH" python3 -c "import trl, transformers, datasets; print('TRL run: trl', trl.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__)"
  python3 -c "import ray; print('ray', ray.__version__)" 2>/dev/null || echo "ray: not installed (yet)"
} 2>&1 | tee "$OUT/versions.txt"

# What the stages import beyond the device image: a missing one names its wheel (benchmarks/gpu/fetch_wheels.sh).
python3 - <<'PY' 2>&1 | tee "$OUT/imports.txt"
import importlib
mods = ("pydantic", "jsonschema", "tenacity", "omegaconf", "rich", "fastapi", "uvicorn", "docstring_parser",
        "opentelemetry.trace", "agentgym.trainer.driver", "agentgym.tools.sandbox_fusion", "sandbox_server.app")
missing = []
for name in mods:
    try:
        importlib.import_module(name)
    except Exception as exc:  # report every failure, not just the first
        missing.append(f"{name} ({exc!r})")
print("imports: all present" if not missing else
      "imports MISSING (add their wheels to benchmarks/gpu/fetch_wheels.sh): " + "; ".join(missing))
PY

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(upd-0.5b trl-0.5b upd-1.5b trl-1.5b rl-0.5b ray-0.5b)
for stage in "${stages[@]}"; do
  kind=${stage%%-*}; size=${stage#*-}
  echo "=== $stage"
  case "$kind" in
    ours) timeout 420 python3 benchmarks/gpu/grpo_step_bench.py --size "$size" --out "$OUT" ;;
    rl)   timeout 200 python3 benchmarks/gpu/grpo_step_bench.py --size "$size" --skip-update --prompts 2 --n 4 --warmup 0 \
            --steps 1 --turn-tokens 64 --tag _rl --out "$OUT" ;;
    rlbig) timeout 300 python3 benchmarks/gpu/grpo_step_bench.py --size "$size" --skip-update --prompts 8 --n 8 --warmup 1 \
            --steps 1 --turn-tokens 128 --tag _rlbig${RLBIG_TAG:-} --out "$OUT" ${RLBIG_ARGS:-} ;;
    upd)  timeout 300 python3 benchmarks/gpu/grpo_step_bench.py --size "$size" --skip-rl --profile --tag _upd --out "$OUT" ;;
    eager) timeout 300 python3 benchmarks/gpu/grpo_step_bench.py --size "$size" --skip-rl --profile --compile off \
            --tag _eager --out "$OUT" ;;
    trl)  PYTHONPATH="$TRL_PYTHONPATH" timeout 230 python3 benchmarks/gpu/trl_grpo_bench.py --size "$size" --out "$OUT" ;;
    ray)  python3 -c "import ray" 2>/dev/null || { echo "ray not installed: skipped"; continue; }
          timeout 300 python3 benchmarks/gpu/grpo_step_bench.py --size "$size" --skip-rl --ray --update-steps 2 --tag _ray --out "$OUT" ;;
    *) echo "unknown stage $stage" ;;
  esac > "$OUT/log_$stage.txt" 2>&1
  echo "rc=$? (log: log_$stage.txt)"; grep -E "^(update-only|grpo-step|trl) |Error|error:" "$OUT/log_$stage.txt" | tail -5
  head -11 "$OUT/profile_${size}_$kind.txt" 2>/dev/null
done
python3 benchmarks/gpu/summarize.py "$OUT" | tee "$OUT/summary.md"
cp "$OUT/summary.md" "$OUT/versions.txt" "$FINAL/" 2>/dev/null
tar czf "$FINAL/results.tgz" -C "$OUT" .
