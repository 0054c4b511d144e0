"""RL from one warm-up model under a chosen algorithm: the quickstart's RL stage and held-out evaluation.

Compares algorithms (GRPO, DAPO, GSPO, turn-level credit, ...) from the *same* SFT checkpoint, which the
quickstart would otherwise retrain per run (and which differs run to run on a busy machine):

    python3 -m agentgym quickstart --run-dir /tmp/a21/grpo ...          # leaves /tmp/a21/grpo/models/sft
    python3 benchmarks/algorithms_learning.py --sft-model /tmp/a21/grpo/models/sft --run-dir /tmp/a21/dapo \
        --rl-steps 20 --eval-rows 128 algorithm.filter_groups.enable=true actor_rollout_ref.actor.clip_ratio_high=0.28

Writes summary.json (held-out results after RL, wall time, the step metrics' dynamic-sampling counts) and
rl/metrics.jsonl in --run-dir. Results: benchmarks/learning.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from agentgym.quickstart import QuickstartSettings, evaluate, eval_name
from agentgym_envs.arithmetic.quickstart import ArithmeticQuickstart as Quickstart
from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine
from agentgym.trajectory import Trajectory
from agentgym.rollout.trajectory_io import write_jsonl
from agentgym.tools.sandbox_fusion import aclose_http_sessions
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.tracking import MetricsTracker
from learning_args import learning_parser


async def rl_from(job: Quickstart, sft_model: Path, evaluate_before: bool) -> dict[str, Any]:
    from transformers import AutoTokenizer

    s = job.s
    s.run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    cfg = job.config(sft_model, "rl", [f"trainer.total_training_steps={s.rl_steps}"])
    engine = DynamicCacheEngine(sft_model)
    await engine.start()
    results: dict[str, Any] = {}
    try:
        greedy = job.loop(engine, tokenizer, cfg, temperature=0.0)
        sampler = job.loop(engine, tokenizer, cfg, temperature=cfg.actor_rollout_ref.rollout.temperature)

        async def held_out(stage: str) -> None:
            for mode, loop in (("greedy", greedy), ("sampled", sampler)):
                result = evaluate(await loop.run_batch(job.eval_rows, group_prefix="eval-"))
                write_jsonl(result.trajectories, s.run_dir / f"eval_{eval_name(stage, mode)}.jsonl")
                results[eval_name(stage, mode)] = {k: v for k, v in vars(result).items() if k != "trajectories"}

        if evaluate_before:
            await held_out("before")
        rollouts = s.run_dir / "rl_trajectories.jsonl"
        rollouts.unlink(missing_ok=True)

        async def collect(rows: list[dict[str, Any]], step: int) -> list[Trajectory]:
            trajs = await sampler.run_batch(rows, n=cfg.actor_rollout_ref.rollout.n, group_prefix=f"step{step}-")
            write_jsonl(trajs, rollouts, append=True)
            return trajs

        trainer = RLTrainer(cfg, collect=collect, engine=engine, dataset=job.train_rows)
        tracker = MetricsTracker(s.run_dir / "rl", cfg.trainer.logger, trainer.total_steps)
        started = time.perf_counter()
        try:
            history = await trainer.fit(tracker)
        finally:
            tracker.close()
            trainer.close()
        results["rl_seconds"] = time.perf_counter() - started
        extra = [m.get("dynamic_sampling/extra_groups_sampled") for m in history]
        if any(e is not None for e in extra):
            results["extra_groups_sampled"] = sum(e or 0 for e in extra)
            results["groups_sampled"] = sum(m.get("dynamic_sampling/groups_sampled", 0) for m in history)
        await held_out("after")
    finally:
        await engine.close()
        await aclose_http_sessions()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = learning_parser(__doc__.splitlines()[0], rl_steps=40, eval_rows=256)
    parser.add_argument("--evaluate-before", action="store_true")
    args = parser.parse_args(argv)
    settings = QuickstartSettings(run_dir=args.run_dir, seed=args.seed, rl_steps=args.rl_steps, eval_rows=args.eval_rows,
                                  sft_rows=args.sft_rows, overrides=tuple(args.overrides))
    started = time.perf_counter()
    results = asyncio.run(rl_from(Quickstart(settings, Console(stderr=True)), args.sft_model, args.evaluate_before))
    results["seconds"] = time.perf_counter() - started
    results["settings"] = {k: str(v) for k, v in vars(settings).items()} | {"sft_model": str(args.sft_model)}
    (args.run_dir / "summary.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
