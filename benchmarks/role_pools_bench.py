"""Step time of a PPO (gae) step with the critic and the reference on a pool of their own: their forwards and the
critic's update one after another with the actor's (`trainer.concurrent_pools=false`) against beside them (true).

    PYTHONPATH=. python benchmarks/role_pools_bench.py                       # CPU, tiny model, 2 Ray CPUs
    PYTHONPATH=. python benchmarks/role_pools_bench.py --size small --steps 4 --cpus 2
    PYTHONPATH=. python benchmarks/role_pools_bench.py --device cuda --size 0.5b --cpus 8   # 2 GPUs

One Ray runtime, one rank for the actor (`global_pool: [1]`) and one for the critic and the reference
(`aux_pool: [1]`); synthetic multi-turn trajectories (`trainer_bench.synthetic_trajectories`). The modes run one
after another in this process, each for `--warmup` + `--steps` steps on the same trajectories, and each mode's
losses are printed so the two can be seen to agree. On CPU the two groups share the machine's cores, so what
concurrency saves there is bounded by how idle the cores were; on GPUs the pools are separate devices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from agentgym.config import load_config  # noqa: E402
from agentgym.trainer.driver import RLTrainer  # noqa: E402
from trainer_bench import SHAPES, build_model, synthetic_trajectories  # noqa: E402

KEYS = ("step", "forwards", "old_log_prob", "ref", "values", "updates", "update_critic", "update_actor")


def overrides(path: Path, args: argparse.Namespace, concurrent: bool) -> list[str]:
    return [
        f"actor_rollout_ref.model.path={path}", f"trainer.device={args.device}", "trainer.use_ray=true",
        "actor_rollout_ref.model.attn_implementation=sdpa", "actor_rollout_ref.actor.use_torch_compile=false",
        "algorithm.adv_estimator=gae", "critic.enable=true", "actor_rollout_ref.actor.use_kl_loss=true",
        "trainer.critic_warmup=0", f"data.train_batch_size={args.prompts}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}", "actor_rollout_ref.actor.optim.lr=1e-6",
        "critic.optim.lr=1e-5", f"data.max_response_length={args.response_len * 2}",
        "trainer.n_gpus_per_node=1", "trainer.mapping.critic=aux_pool", "trainer.mapping.ref=aux_pool",
        "trainer.resource_pool_spec={global_pool: [1], aux_pool: [1]}",
        f"trainer.concurrent_pools={str(concurrent).lower()}",
    ] + (["actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: bf16, reduce_dtype: fp32}",
          "critic.model.fsdp_config.mixed_precision={param_dtype: bf16, reduce_dtype: fp32}"]
         if args.device == "cuda" else [])


async def run_mode(path: Path, vocab: int, args: argparse.Namespace, concurrent: bool) -> dict:
    config = load_config(None, overrides(path, args, concurrent))
    trainer = RLTrainer(config)
    trainer.start_workers()
    measured = []
    try:
        for step in range(args.warmup + args.steps):
            trajs = synthetic_trajectories(args.prompts, args.n, args.prompt_len, args.response_len, vocab, seed=step)
            metrics = await trainer.train_step(trajs, step=step + 1)
            if step >= args.warmup:
                measured.append(metrics)
    finally:
        trainer.close()
    out = {f"{k}_s": statistics.mean(m[f"timing_s/{k}"] for m in measured) for k in KEYS}
    out["last_vf_loss"] = measured[-1]["critic/vf_loss"]
    out["last_pg_loss"] = measured[-1]["actor/pg_loss"]
    return out


async def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="role_pools_bench_"))
    path, params, vocab = build_model(args.size, workdir / "model")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)  # GPUs: all the machine has
    try:
        modes = []
        for name in args.modes.split(","):
            if name not in ("sequential", "concurrent"):
                raise SystemExit(f"--modes: {name!r} is neither sequential nor concurrent")
            modes.append({"mode": name, **await run_mode(path, vocab, args, concurrent=name == "concurrent")})
    finally:
        ray.shutdown()
    return {"size": args.size, "params": params, "cpus": args.cpus, "modes": modes, "args": vars(args)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: one GPU for the actor, one for the critic and the reference (2 GPUs)")
    parser.add_argument("--size", choices=list(SHAPES), default="tiny")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs (each group's rank takes all of them as threads)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts (groups) per step")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--response-len", type=int, default=96, help="mean response length (0.5x-1.5x)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--modes", default="sequential,concurrent,sequential,concurrent",
                        help="comma-separated, run in this order (alternating evens out drifting machine load)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for role_pools_bench.json")
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    columns = ["mode", *(f"{k}_s" for k in KEYS), "last_vf_loss", "last_pg_loss"]
    print(" ".join(f"{c:>14s}" for c in columns))
    for row in summary["modes"]:
        print(" ".join(f"{row[c]:>14.4g}" if isinstance(row[c], float) else f"{row[c]:>14s}" for c in columns))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"role_pools_bench_{args.size}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
