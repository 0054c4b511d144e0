# Sourced by the device-machine scripts (benchmarks/gpu/*.sh), from the repository root:
#   . benchmarks/gpu/device_env.sh; device_env [ray]   # ray: stop (exit 3) unless Ray is installed
# The device image lacks some of our dependencies and has no network: the wheels carried in .whl/ go into
# /tmp/site; Ray travels in two halves (.whl_ray0/ray.part00 in one call, .whl_ray1/ray.part01 in the next call
# to the same warm machine, 64 MiB a call), kept in /tmp/ray_parts and installed once both are there.
# Defines PIP (the offline install command) and exports PYTHONPATH=/tmp/site:$PWD, CUDA allocator and NCCL
# settings (NVLink multicast off).

PIP="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade"
RAY_WHEEL=/tmp/ray_parts/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl

device_env() {  # [ray]
  mkdir -p /tmp/site /tmp/ray_parts
  export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PIP --target /tmp/site .whl/*.whl 2>&1 | grep -v -i warning | tail -3
  fi
  cp -n .whl_ray*/ray.part* /tmp/ray_parts/ 2>/dev/null || true
  if [ -f /tmp/ray_parts/ray.part00 ] && [ -f /tmp/ray_parts/ray.part01 ] && [ ! -d /tmp/site/ray ]; then
    cat /tmp/ray_parts/ray.part00 /tmp/ray_parts/ray.part01 > "$RAY_WHEEL"
    md5sum "$RAY_WHEEL"
    $PIP --target /tmp/site "$RAY_WHEEL" 2>&1 | grep -v -i warning | tail -3
  fi
  export PYTHONPATH="/tmp/site:$PWD"
  if [ "${1:-}" = ray ]; then require_ray; fi
}

require_ray() {  # stop the script (exit 3) when Ray is not installed yet
  python3 -c "import ray" 2>/dev/null || { echo "ray is not installed yet: carry .whl_ray0 in one call, then .whl_ray1"; exit 3; }
}

arithmetic_work() {  # SIZE ROWS: sets WORK (a fresh folder) and MODEL (a random-init model of SIZE in it) and
                     # writes ROWS arithmetic-task rows to $WORK/train.jsonl
  WORK=$(mktemp -d)
  MODEL=$(python3 -c "from agentgym.models import build_tiny_model; print(build_tiny_model('$WORK/models', size='$1'))")
  python3 -m agentgym_envs.arithmetic.data --out "$WORK/train.jsonl" --rows "$2"
}
