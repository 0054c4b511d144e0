#!/usr/bin/env bash
# Downloads, on this machine, the pure-Python and binary wheels the GPU benchmarks need on the device machine
# (python 3.12, x86_64; it has torch, transformers, aiohttp, httpx, pyyaml but none of these) into .whl/
# (git-ignored; carry it: `carry: [".whl"]`). The benchmark scripts install them with --target /tmp/site.
# docstring-parser: the `@function_tool` decorator (agentgym.tools) imports it; opentelemetry-api (+ importlib-metadata,
# zipp): fastapi >= 0.164 imports it, so without them the sandbox server exits at start. grpo_vs_trl.sh checks
# these imports first and names any that is missing. msgpack, protobuf: Ray's own dependencies (its wheel travels in
# two halves, device_env.sh), absent from the device image.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
  pydantic pydantic-core annotated-types typing-inspection tenacity jsonschema jsonschema-specifications \
  referencing rpds-py attrs "fastapi<0.165" starlette uvicorn h11 click rich markdown-it-py mdurl pygments \
  omegaconf antlr4-python3-runtime docstring-parser opentelemetry-api importlib-metadata zipp \
  msgpack protobuf
ls .whl | wc -l; du -sh .whl
