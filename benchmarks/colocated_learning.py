"""Does GRPO on the quickstart task learn with 2 colocated ranks as it does with 1? The same warm-up model, the same
rows and steps, the trainer's ranks hosting the engine replicas (`rollout.placement=colocated`, the KV cache
handed over during the update); held-out greedy accuracy before and after, per rank count.

    python3 -m agentgym quickstart --run-dir /tmp/q ...                        # leaves /tmp/q/models/sft
    python3 benchmarks/colocated_learning.py --sft-model /tmp/q/models/sft --run-dir /tmp/colo --ranks 1 2 \
        --rl-steps 20 --eval-rows 128

Writes summary.json in --run-dir (accuracy before, after per rank count, RL seconds, the step metrics' mean score
per step) and ranks{N}/rl/metrics.jsonl. A figure script, not a test: on the 2-core CPU machine a run of 20 steps
takes tens of minutes. Results: benchmarks/SCALE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import ray
from rich.console import Console

from agentgym.quickstart import QuickstartSettings, evaluate
from agentgym.rollout.build import make_rollout
from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine
from agentgym.tools.sandbox_fusion import aclose_http_sessions
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.tracking import MetricsTracker
from agentgym_envs.arithmetic import INTERACTION_CONFIG
from agentgym_envs.arithmetic.quickstart import ArithmeticQuickstart as Quickstart
from learning_args import learning_parser


async def held_out(job: Quickstart, model: Path, state_dict: dict | None) -> float:
    """Greedy held-out accuracy of `model`'s weights (or `state_dict` loaded into it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    cfg = job.config(model, "eval")
    async with DynamicCacheEngine(model) as engine:
        if state_dict is not None:
            await engine.update_weights(state_dict)
        loop = job.loop(engine, tokenizer, cfg, temperature=0.0)
        return evaluate(await loop.run_batch(job.eval_rows, group_prefix="eval-")).accuracy


async def rl_with_ranks(job: Quickstart, sft_model: Path, ranks: int, steps: int) -> dict[str, Any]:
    # The quickstart hands its loop the tools and teacher it built; the trainer's own rollout reads them from the
    # config, so name the same files (without them every tool call fails and every score is 0).
    cfg = job.config(sft_model, "rl", [
        f"trainer.total_training_steps={steps}", "trainer.use_ray=true", f"trainer.n_gpus_per_node={ranks}",
        "trainer.device=cpu", "actor_rollout_ref.rollout.placement=colocated", "trainer.save_freq=-1",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={job.env.tool_config}",
        f"actor_rollout_ref.rollout.multi_turn.interaction_config_path={INTERACTION_CONFIG}"])
    rollout = make_rollout(cfg)
    trainer = RLTrainer(cfg, rollout=rollout, dataset=job.train_rows)
    tracker = MetricsTracker(job.s.run_dir / "rl", ["jsonl"], trainer.total_steps)
    started = time.perf_counter()
    try:
        history = await trainer.fit(tracker)
        weights = await trainer.actor_state_dict()
    finally:
        tracker.close()
        trainer.close()
        await rollout.close()
    return {"rl_seconds": time.perf_counter() - started, "weights": weights,
            "score_per_step": [m.get("critic/score/mean") for m in history],
            "memory_host_rss_gib": [m.get("memory/update/host_rss_gib") for m in history]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    try:
        base = Quickstart(QuickstartSettings(run_dir=args.run_dir / "before", seed=args.seed, rl_steps=args.rl_steps,
                                             eval_rows=args.eval_rows, sft_rows=args.sft_rows), Console(stderr=True))
        results["accuracy_before"] = await held_out(base, args.sft_model, None)
        for ranks in args.ranks:
            settings = QuickstartSettings(run_dir=args.run_dir / f"ranks{ranks}", seed=args.seed, rl_steps=args.rl_steps,
                                          eval_rows=args.eval_rows, sft_rows=args.sft_rows, overrides=tuple(args.overrides))
            job = Quickstart(settings, Console(stderr=True))
            out = await rl_with_ranks(job, args.sft_model, ranks, args.rl_steps)
            out["accuracy_after"] = await held_out(job, args.sft_model, out.pop("weights"))
            results[f"ranks{ranks}"] = out
            print(json.dumps({f"ranks{ranks}": out}), flush=True)
    finally:
        await aclose_http_sessions()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = learning_parser(__doc__.splitlines()[0], rl_steps=20, eval_rows=128)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    ray.init(address="local", num_cpus=max(args.ranks), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        results = asyncio.run(run(args))
    finally:
        ray.shutdown()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    (args.run_dir / "summary.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
