"""The quickstart's RL stage under each trainer.rollout_mode, from one warm-up model: held-out figures and wall
time per step, side by side (docs/async.md).

Every mode starts from the *same* SFT checkpoint (a quickstart run leaves one in <run-dir>/models/sft):

    python3 -m agentgym quickstart --run-dir /tmp/async/qs                 # leaves /tmp/async/qs/models/sft
    python3 benchmarks/async_learning.py --sft-model /tmp/async/qs/models/sft --run-dir /tmp/async/modes \
        --rl-steps 20 --eval-rows 128

Modes (--modes): sync, one_step_off, async0, async1, async2 (async with max_staleness 0, 1 and 2); a `+partial` suffix turns
on trainer.partial_rollout. Per mode it writes <run-dir>/<mode>/metrics.jsonl and prints one row: held-out greedy
and sampled accuracy after RL, mean seconds per step (timing_s/iteration, collect or wait through weight sync),
the update's share of it, the mean staleness trained at and the groups dropped; summary.json has it all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from agentgym.quickstart import QuickstartSettings, evaluate
from agentgym.rollout.agent_loop import AgentLoop
from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine
from agentgym.tools.sandbox_fusion import aclose_http_sessions
from agentgym.trainer.driver import RLTrainer
from agentgym.trainer.tracking import MetricsTracker
from agentgym.trajectory import Trajectory
from agentgym_envs.arithmetic.quickstart import ArithmeticQuickstart as Quickstart

MODES: dict[str, list[str]] = {
    "sync": ["trainer.rollout_mode=sync"],
    "one_step_off": ["trainer.rollout_mode=one_step_off"],
    "async0": ["trainer.rollout_mode=async", "trainer.max_staleness=0"],  # must repeat sync's figures
    "async1": ["trainer.rollout_mode=async", "trainer.max_staleness=1"],
    "async2": ["trainer.rollout_mode=async", "trainer.max_staleness=2"],
}


@dataclass
class LoopRollout:
    """The sampling agent loop over the run's engine as a `Rollout` whose weight syncs pause its engine calls."""

    loop: AgentLoop
    engine: DynamicCacheEngine
    n: int
    samples_greedy: bool = False
    reports_done: bool = False

    async def collect(self, rows: list[dict[str, Any]], step: int, *, greedy: bool = False,
                      on_done: Any = None) -> list[Trajectory]:
        return await self.loop.run_batch(rows, n=self.n, group_prefix=f"step{step}-")

    async def start(self, replicas: Sequence[Any] = ()) -> None:
        pass

    async def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        await self.engine.update_weights(dict(state_dict))

    async def step_metrics(self) -> dict[str, float]:
        return {}

    def weight_sync(self, version: int) -> AbstractAsyncContextManager[None]:
        return self.loop.gate.weight_sync(version)

    async def close(self) -> None:
        pass


def mode_overrides(name: str) -> list[str]:
    base, _, partial = name.partition("+")
    if base not in MODES or partial not in ("", "partial"):
        raise SystemExit(f"unknown mode {name!r}; choose from {list(MODES)}, each optionally with +partial")
    return MODES[base] + (["trainer.partial_rollout=true"] if partial else [])


async def run_mode(settings: QuickstartSettings, sft_model: Path, name: str) -> dict[str, Any]:
    from transformers import AutoTokenizer

    job = Quickstart(settings, Console(stderr=True))
    out = settings.run_dir / name
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(sft_model)
    cfg = job.config(sft_model, "rl", [f"trainer.total_training_steps={settings.rl_steps}",
                                       f"trainer.default_local_dir={out}", *mode_overrides(name)])
    engine = DynamicCacheEngine(sft_model)
    await engine.start()
    try:
        sampler = job.loop(engine, tokenizer, cfg, temperature=cfg.actor_rollout_ref.rollout.temperature)
        greedy = job.loop(engine, tokenizer, cfg, temperature=0.0)
        rollout = LoopRollout(sampler, engine, cfg.actor_rollout_ref.rollout.n)
        trainer = RLTrainer(cfg, rollout=rollout, dataset=job.train_rows)
        tracker = MetricsTracker(out, cfg.trainer.logger, trainer.total_steps)
        started = time.perf_counter()
        try:
            history = await trainer.fit(tracker)
        finally:
            tracker.close()
            trainer.close()
        rl_seconds = time.perf_counter() - started
        after_greedy = evaluate(await greedy.run_batch(job.eval_rows, group_prefix="eval-"))
        after_sampled = evaluate(await sampler.run_batch(job.eval_rows, group_prefix="eval-"))
    finally:
        await engine.close()
        await aclose_http_sessions()

    def mean(key: str) -> float:
        values = [m[key] for m in history if key in m]
        return float(np.mean(values)) if values else float("nan")

    return {
        "mode": name, "accuracy_greedy": after_greedy.accuracy, "accuracy_sampled": after_sampled.accuracy,
        "first_try_greedy": after_greedy.first_try_accuracy, "rl_seconds": rl_seconds,
        "seconds_per_step": mean("timing_s/iteration"), "update_seconds": mean("timing_s/step"),
        "rollout_wait_seconds": mean("timing_s/rollout_wait"), "staleness_mean": mean("rollout/staleness/mean"),
        "dropped_groups": sum(m.get("rollout/staleness/dropped_groups", 0.0) for m in history),
        "final_score_mean": mean("critic/score/mean"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-model", type=Path, required=True, help="a quickstart run's models/sft directory")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--modes", default="sync,one_step_off,async1,async2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rl-steps", type=int, default=20)
    parser.add_argument("--eval-rows", type=int, default=128)
    parser.add_argument("--sft-rows", type=int, default=2048, help="as given to the quickstart run (held-out dedup)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for every mode")
    args = parser.parse_args(argv)
    settings = QuickstartSettings(run_dir=args.run_dir, seed=args.seed, rl_steps=args.rl_steps, eval_rows=args.eval_rows,
                                  sft_rows=args.sft_rows, overrides=tuple(args.overrides))
    rows = [asyncio.run(run_mode(settings, args.sft_model, name)) for name in args.modes.split(",")]
    (args.run_dir / "summary.json").write_text(json.dumps(rows, indent=2))
    base = next((r["seconds_per_step"] for r in rows if r["mode"] == "sync"), None)
    print(f"{'mode':<20}{'greedy acc':>11}{'sampled acc':>12}{'s/step':>9}{'vs sync':>9}{'update s':>9}"
          f"{'staleness':>10}{'dropped':>8}")
    for r in rows:
        ratio = f"{r['seconds_per_step'] / base:.2f}x" if base else "-"
        print(f"{r['mode']:<20}{r['accuracy_greedy']:>11.3f}{r['accuracy_sampled']:>12.3f}{r['seconds_per_step']:>9.2f}"
              f"{ratio:>9}{r['update_seconds']:>9.2f}{r['staleness_mean']:>10.2f}{r['dropped_groups']:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
