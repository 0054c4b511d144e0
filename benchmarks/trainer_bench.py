"""Update-phase throughput of the trainer: tokens/s and MFU of GRPO actor updates on synthetic trajectories.

    python benchmarks/trainer_bench.py                                  # CPU, tiny random model
    python benchmarks/trainer_bench.py --device cuda --size 0.5b        # GPU, Qwen2.5-0.5B shapes (random init)

A random-init Qwen2-architecture model is built from a config and written with save_pretrained, then loaded by
the trainer the normal way (from_pretrained). Trajectories are multi-turn shaped: model spans separated by
masked tool spans, groups of `--n` samples per prompt. MFU = 6 * params * tokens / update time / peak FLOP/s
(attention FLOPs not counted; a gradient-checkpointing recompute is not counted as useful work).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentgym.config import load_config  # noqa: E402
from agentgym.trajectory import Trajectory  # noqa: E402
from agentgym.trainer.driver import RLTrainer  # noqa: E402
from agentgym.trainer.workers import LocalWorkerGroup  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0}
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=6, num_attention_heads=8,
                  num_key_value_heads=2, vocab_size=8192, tie_word_embeddings=True),
    # Published Qwen2.5 shapes (config.json of Qwen/Qwen2.5-0.5B / 1.5B).
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}


def build_model(size: str, out_dir: Path) -> tuple[Path, int, int]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**SHAPES[size], max_position_embeddings=32768, rms_norm_eps=1e-6)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out_dir)
    del model
    return out_dir, params, config.vocab_size


def synthetic_trajectories(num_prompts: int, n: int, prompt_len: int, response_len: int, vocab: int,
                           seed: int) -> list[Trajectory]:
    """Responses of ~`response_len` tokens: three model spans with two masked tool spans (1/8 each) between."""
    rng = random.Random(seed)
    out = []
    for p in range(num_prompts):
        prompt = [rng.randrange(2, vocab) for _ in range(prompt_len)]
        for k in range(n):
            length = max(8, int(response_len * rng.uniform(0.5, 1.5)))
            tool = max(1, length // 8)
            mask = [1] * length
            for start in (length // 4, length // 2):
                mask[start:start + tool] = [0] * tool
            out.append(Trajectory(uid=f"{p}-{k}", group_id=str(p), prompt_ids=prompt,
                                  response_ids=[rng.randrange(2, vocab) for _ in range(length)], loss_mask=mask,
                                  rollout_logprobs=[0.0] * length, final_score=float(rng.random() < 0.5)))
    return out


def peak_flops(device: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


async def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="trainer_bench_"))
    path, params, vocab = build_model(args.size, workdir / "model")
    overrides = [
        f"actor_rollout_ref.model.path={path}", f"trainer.device={args.device}", "trainer.use_ray=false",
        "algorithm.adv_estimator=grpo", f"data.train_batch_size={args.prompts}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts // args.minibatches}",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={args.max_token_len}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={args.max_token_len * 2}",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={str(args.grad_ckpt).lower()}",
        f"actor_rollout_ref.model.attn_implementation={args.attn}",
        f"actor_rollout_ref.model.use_remove_padding={str(args.remove_padding).lower()}",
        "actor_rollout_ref.actor.optim.lr=1e-6", f"data.max_response_length={args.response_len * 2}",
    ]
    if args.device == "cuda":
        overrides.append("actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: bf16, reduce_dtype: fp32}")
    config = load_config(None, overrides)
    group = LocalWorkerGroup(config, total_steps=args.warmup + args.steps, roles=("actor",),
                             distributed=args.device == "cuda")
    trainer = RLTrainer(config, workers=group)
    results = []
    for step in range(args.warmup + args.steps):
        trajs = synthetic_trajectories(args.prompts, args.n, args.prompt_len, args.response_len, vocab, seed=step)
        if args.device == "cuda":
            torch.cuda.synchronize()
        metrics = await trainer.train_step(trajs, step=step + 1)
        if step >= args.warmup:
            results.append(metrics)
    trainer.close()
    tokens = sum(m["perf/total_tokens"] for m in results)
    update_s = sum(m["timing_s/update_actor"] for m in results)
    logprob_s = sum(m["timing_s/old_log_prob"] for m in results)
    peak = peak_flops(args.device, args.peak_tflops)
    summary = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "size": args.size, "params": params, "steps": args.steps,
        "tokens_per_step": tokens / len(results),
        "model_tokens_per_step": sum(m["response/model_tokens"] for m in results) / len(results),
        "update_tokens_per_s": tokens / update_s,
        "old_log_prob_tokens_per_s": tokens / logprob_s,
        "update_s_per_step": update_s / len(results),
        "step_s": sum(m["timing_s/step"] for m in results) / len(results),
        "mfu_update": (6 * params * tokens / update_s / peak) if peak else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "grad_norm": results[-1]["actor/grad_norm"],
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
        "args": vars(args),
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=list(SHAPES), default="tiny")
    parser.add_argument("--prompts", type=int, default=8, help="prompts (groups) per step")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=192, help="mean response length (0.5x-1.5x)")
    parser.add_argument("--minibatches", type=int, default=1, help="optimizer steps per training step")
    parser.add_argument("--max-token-len", type=int, default=4096, help="ppo_max_token_len_per_gpu")
    parser.add_argument("--grad-ckpt", action="store_true")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--remove-padding", action="store_true",
                        help="one packed row per micro-batch (wants a varlen kernel: flash_attention_2 / flex_attention)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for trainer_bench.json")
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    for key, value in summary.items():
        if key != "args":
            print(f"{key:28s} {value:.4g}" if isinstance(value, float) else f"{key:28s} {value}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"trainer_bench_{args.size}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
