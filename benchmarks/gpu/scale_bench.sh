#!/usr/bin/env bash
# Rollout on N GPUs of one node: main_ppo on the multi-turn arithmetic task (calculator tool: the GPU image has no
# bubblewrap for the sandbox), 64*N trajectories a step (8N prompts x 8 samples), a random-init model of SIZE.
#   MODE=colocated (default): an engine replica in every one of N trainer ranks (rollout.placement=colocated).
#   MODE=separate: N/2 trainer ranks and a rollout pool of N/2 replica actors on the other GPUs
#     (rollout.placement=separate, weights broadcast over NCCL from trainer rank 0); N must be even.
#   bash benchmarks/gpu/scale_bench.sh N [SIZE] [STEPS] [MODE]   # e.g. 2 0.5b 4 separate; carry [.whl, .whl_ray0]
#                                                                # then [.whl, .whl_ray1]
# Prints, per warm step (the first is dropped: compiles and graph capture), rollout sampled tok/s per rollout GPU,
# update tok/s per trainer GPU, old-log-prob and weight-sync seconds; writes $OUT/scale_N[_separate].json. Scaling
# efficiency = per-GPU throughput at N over per-GPU throughput at 1 (run N=1 on the same machine kind).
set -uo pipefail
N="${1:?usage: scale_bench.sh N [SIZE] [STEPS]}"
SIZE="${2:-0.5b}"
STEPS="${3:-4}"
MODE="${4:-colocated}"
case "$MODE" in
  colocated) TRAIN_GPUS=$N; ROLLOUT_GPUS=$N; TAG="$N"; PLACE="actor_rollout_ref.rollout.placement=colocated" ;;
  separate)
    [ $((N % 2)) -eq 0 ] || { echo "MODE=separate splits the node in two: N must be even"; exit 2; }
    TRAIN_GPUS=$((N / 2)); ROLLOUT_GPUS=$((N / 2)); TAG="${N}_separate"
    PLACE="actor_rollout_ref.rollout.placement=separate actor_rollout_ref.rollout.n_gpus_per_node=$ROLLOUT_GPUS" ;;
  *) echo "MODE must be colocated or separate, got $MODE"; exit 2 ;;
esac
FINAL="${OUT:-/tmp/scale_bench_out}"
mkdir -p "$FINAL"
. benchmarks/gpu/device_env.sh
device_env ray
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$FINAL/gpus_$TAG.txt"
arithmetic_work "$SIZE" $((64 * N))
timeout 540 python3 -m agentgym.trainer.main_ppo agentgym_envs/arithmetic/train.yaml \
  actor_rollout_ref.model.path="$MODEL" data.train_files="$WORK/train.jsonl" \
  trainer.device=cuda trainer.use_ray=true trainer.n_gpus_per_node="$TRAIN_GPUS" $PLACE \
  data.train_batch_size=$((8 * N)) actor_rollout_ref.rollout.n=8 actor_rollout_ref.actor.ppo_mini_batch_size=$((8 * N)) \
  data.max_response_length=384 actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3 \
  actor_rollout_ref.model.use_remove_padding=true \
  "actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: bf16, reduce_dtype: fp32}" \
  trainer.total_training_steps="$STEPS" trainer.save_freq=-1 trainer.default_local_dir="$WORK/run" \
  "trainer.logger=[console,jsonl]" ray_kwargs.ray_init.num_cpus=$((4 * N + 4)) 2>&1 | tee "$FINAL/scale_$TAG.log" | tail -30
python3 - "$WORK/run/metrics.jsonl" "$N" "$FINAL/scale_$TAG.json" "$MODE" "$TRAIN_GPUS" "$ROLLOUT_GPUS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
n, mode, train_gpus, rollout_gpus = int(sys.argv[2]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
warm = rows[1:] or rows
def med(key):
    vals = [r[key] for r in warm if key in r]
    return statistics.median(vals) if vals else None
gen = [r.get("rollout/engine/generated_tokens", 0) / r["timing_s/rollout"] for r in warm if r.get("timing_s/rollout")]
out = {"gpus": n, "mode": mode, "trainer_gpus": train_gpus, "rollout_gpus": rollout_gpus, "steps_measured": len(warm),
       "step_s": med("timing_s/step"), "rollout_s": med("timing_s/rollout"), "old_log_prob_s": med("timing_s/old_log_prob"),
       "update_s": med("timing_s/update_actor"), "weight_sync_s": med("timing_s/weight_sync"),
       "rollout_sampled_tok_s_per_gpu": statistics.median(gen) / rollout_gpus if gen else None,
       "update_tok_s_per_gpu": (med("perf/update_tokens_per_s") or 0) / train_gpus}
json.dump(out, open(sys.argv[3], "w"), indent=1)
print(json.dumps(out, indent=1))
PY
