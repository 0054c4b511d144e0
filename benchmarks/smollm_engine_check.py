"""One warmed-up SmolLM2 model, evaluated greedily on the smollm_arith held-out tasks by each in-process engine
variant (backend x dtype): does the engine or the dtype change what the model does?

Why: on the GPU (paged engine, bf16) the warm-up model scored 0 % before RL, where the same warm-up evaluated on
the CPU (dynamic-cache engine, fp32) scored 100 % (benchmarks/learning.md, issue 28). Running every variant on the
CPU on the same weights and prompts separates the two suspects. Prints one line per variant (accuracy, tool-call
rate, and the first reply) and writes each variant's trajectories to OUT/<variant>.jsonl.

    python3 benchmarks/smollm_engine_check.py --model RUN/models/sft --out /tmp/check [--rows 24] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "dynamic-fp32": {"backend": "dynamic", "dtype": "float32"},
    "dynamic-bf16": {"backend": "dynamic", "dtype": "bfloat16"},
    "paged-fp32": {"backend": "paged", "dtype": "float32"},
    "paged-bf16": {"backend": "paged", "dtype": "bfloat16"},
}


async def evaluate_variant(job, model: Path, name: str, engine_kwargs: dict, device: str) -> dict:
    from transformers import AutoTokenizer

    from agentgym.rollout.engines.registry import make_engine

    rows = len(job.eval_rows)  # the batch sizes the paged engine's KV reservation on the CPU follows
    overrides = [f"trainer.device={device}", f"data.train_batch_size={rows}",
                 f"actor_rollout_ref.actor.ppo_mini_batch_size={rows}", "actor_rollout_ref.rollout.n=1"]
    overrides += [f"+actor_rollout_ref.rollout.engine_kwargs.transformers.{k}={v}" for k, v in engine_kwargs.items()]
    cfg = job.config(model, f"check-{name}", overrides)
    tokenizer = AutoTokenizer.from_pretrained(model)
    engine = make_engine(cfg)
    await engine.start()
    try:
        trajs = await job.loop(engine, tokenizer, cfg, temperature=0.0).run_batch(job.eval_rows, group_prefix="eval-")
    finally:
        await engine.close()
    result = job.evaluate(trajs)
    first = next((m.get("content") or json.dumps(m.get("tool_calls")) for m in trajs[0].messages
                  if m.get("role") == "assistant"), "")
    return {"variant": name, "accuracy": result.accuracy, "tool_call_rate": sum(t.num_tool_calls > 0 for t in trajs) / len(trajs),
            "tool_use_correct": result.tool_use_correct, "first_reply": first[:300], "trajectories": trajs}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()

    from agentgym.rollout.trajectory_io import write_jsonl
    from agentgym.tools.embedded_sandbox import stop_embedded_sandboxes
    from agentgym.tools.sandbox_fusion import aclose_http_sessions
    from agentgym.utils.console import make_console
    from agentgym_envs.smollm_arith.quickstart import SmolLMQuickstart

    args.out.mkdir(parents=True, exist_ok=True)
    settings = SmolLMQuickstart.settings(args.out, seed=args.seed, eval_rows=args.rows)
    job = SmolLMQuickstart(settings, make_console())
    try:
        for name in args.variants:
            row = await evaluate_variant(job, args.model, name, VARIANTS[name], args.device)
            write_jsonl(row.pop("trajectories"), args.out / f"{name}.jsonl")
            print("engine-check", json.dumps(row), flush=True)
    finally:
        await aclose_http_sessions()
        stop_embedded_sandboxes()


if __name__ == "__main__":
    asyncio.run(main())
