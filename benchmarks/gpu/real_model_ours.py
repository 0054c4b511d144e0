"""Our job (`agentgym quickstart --model smollm2`) on one GPU at a larger batch, with held-out accuracy against RL
wall time (curve.jsonl) and rollout/update tokens per second, for benchmarks/gpu/real_model_vs_trl.sh.

    python benchmarks/gpu/real_model_ours.py --model DIR --run-dir RUN [--sft-epochs 0] [--rl-steps 20]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    # The CPU run's warm-up (benchmarks/learning.md): half the transcripts answer from memory, so the warmed-up
    # model calls the tool on only part of its samples and RL has that share (and accuracy) to raise.
    parser.add_argument("--sft-epochs", type=int, default=2)
    parser.add_argument("--sft-rows", type=int, default=48)
    parser.add_argument("--direct-share", type=float, default=0.5)
    parser.add_argument("--rl-steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--eval-rows", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from agentgym.quickstart.job import run_quickstart
    from agentgym.utils.console import make_console
    from agentgym_envs.smollm_arith.quickstart import SmolLMQuickstart

    batch = args.prompts
    # These reach the RL stage; the warm-up keeps its own learning rate and batch (Quickstart.config: the job's
    # stage settings win). Before that, `--lr` also set the warm-up's rate, 5x below its 5e-5 (session 11's 0 %).
    overrides = ("trainer.device=cuda", f"data.train_batch_size={batch}", f"actor_rollout_ref.rollout.n={args.n}",
                 f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}", f"actor_rollout_ref.actor.optim.lr={args.lr}",
                 "actor_rollout_ref.actor.use_torch_compile=false",
                 # the CPU config's memory savers, undone: the GPU has room for large micro-batches
                 "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384",
                 "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=16384",
                 "actor_rollout_ref.model.enable_gradient_checkpointing=false",
                 "actor_rollout_ref.rollout.engine_kwargs.transformers.gpu_memory_utilization=0.15",
                 *args.overrides)
    console = make_console()
    SmolLMQuickstart.model_dir = Path(args.model)
    settings = SmolLMQuickstart.settings(args.run_dir, seed=args.seed, sft_epochs=args.sft_epochs, sft_rows=args.sft_rows,
                                         direct_share=args.direct_share, sft_batch_size=8, rl_steps=args.rl_steps, eval_rows=args.eval_rows,
                                         eval_every=args.eval_every, overrides=overrides)
    run_quickstart(settings, console, SmolLMQuickstart(settings, console))
    metrics = [json.loads(line) for line in (args.run_dir / "rl" / "metrics.jsonl").read_text().splitlines() if line]
    summary = json.loads((args.run_dir / "summary.json").read_text())
    summary["curve"] = [json.loads(line) for line in (args.run_dir / "curve.jsonl").read_text().splitlines() if line]
    summary["steps"] = [{k: v for k, v in m.items() if k.startswith(("timing", "perf", "critic/score", "response", "rollout/", "actor/"))
                         or "tokens" in k} for m in metrics]
    (args.run_dir / "ours_summary.json").write_text(json.dumps(summary, indent=2))
    print("ours-summary", json.dumps({k: summary[k] for k in ("before", "after", "curve", "phase_seconds")}), flush=True)


if __name__ == "__main__":
    main()
