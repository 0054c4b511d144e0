#!/usr/bin/env bash
# The README's GPU command on the device machine: main_ppo on a ready environment with the trainer and the
# in-process engine on CUDA (compiled blocks and head, packed micro-batches, bf16), a few GRPO steps.
# The arithmetic environment (calculator tool) stands in for code_arith: the GPU image has no bubblewrap for the
# sandbox. A random-init `small` model only shows the loop running on the GPU; figures come from grpo_vs_trl.sh.
#   bash benchmarks/gpu/main_ppo_gpu.sh [STEPS]        # carry [.whl] (pydantic, jsonschema, tenacity, rich, ...)
set -euo pipefail
STEPS="${1:-3}"
FINAL="${OUT:-/tmp/main_ppo_gpu_out}"
mkdir -p "$FINAL" /tmp/site
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 \
    | grep -v -i warning | tail -3 || true
fi
export PYTHONPATH="/tmp/site:$PWD"
WORK=$(mktemp -d)
MODEL=$(python3 -c "from agentgym.models import build_tiny_model; print(build_tiny_model('$WORK/models', size='small'))")
python3 -m agentgym_envs.arithmetic.data --out "$WORK/train.jsonl" --rows 64
time python3 -m agentgym.trainer.main_ppo agentgym_envs/arithmetic/train.yaml \
  actor_rollout_ref.model.path="$MODEL" data.train_files="$WORK/train.jsonl" \
  trainer.device=cuda actor_rollout_ref.model.use_remove_padding=true \
  "actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: bf16, reduce_dtype: fp32}" \
  trainer.total_training_steps="$STEPS" trainer.save_freq=-1 trainer.default_local_dir="$WORK/run" \
  actor_rollout_ref.actor.optim.lr=2e-4 2>&1 | tee "$FINAL/main_ppo.log" | grep -v -E "^\s*$" | tail -40
find "$WORK/run" -name metrics.jsonl -exec cp {} "$FINAL/" \; 2>/dev/null || true
