"""TRL's GRPOTrainer on the same model shape, batch and lengths as grpo_step_bench.py's update-only part.

    python benchmarks/gpu/trl_grpo_bench.py --size 0.5b --out $OUT         # GPU
    python benchmarks/gpu/trl_grpo_bench.py --size tiny --device cpu       # CPU smoke test

`--prompts` prompts x `--n` generations per optimizer step (generation_batch_size = prompts*n, split into
micro-batches of `--micro` sequences by gradient accumulation), prompts of exactly `--prompt-len` tokens,
completions of `--completion-len` tokens (a random-init model never stops early), a trivial reward. TRL defaults
otherwise (its fused log-prob head, bf16 autocast), except gradient checkpointing, off as in our run (pass
--grad-ckpt for TRL's default). Phases per optimizer step: generation (+ reward/advantages, TRL's
`_generate_and_score_completions`) and update (everything else in the step: forward/backward of every
micro-batch and the optimizer step). Update tokens/s = (prompt + completion tokens) / update time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpo_step_bench import build_model, peak_flops, sync  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--micro", type=int, default=16, help="per_device_train_batch_size (sequences)")
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--completion-len", type=int, default=512)
    parser.add_argument("--grad-ckpt", action="store_true")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()

    import datasets
    import transformers
    import trl
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    workdir = Path(tempfile.mkdtemp(prefix="trl_bench_"))
    model_path, params = build_model(args.size, Path(os.environ.get("AGENTGYM_MODEL_DIR", workdir / "models")))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    # Prompts of about prompt_len tokens (random plain-vocabulary text cut to prompt_len ids; re-encoding the
    # decoded text may merge a few pieces, and TRL left-pads to the longest, so token counts come from the masks).
    rng = random.Random(0)
    special = set(tokenizer.all_special_ids)
    plain = [i for i in range(len(tokenizer)) if i not in special]
    prompts = []
    for _ in range(args.prompts * (args.warmup + args.steps + 1)):
        ids = [rng.choice(plain) for _ in range(args.prompt_len * 2)]
        cut = tokenizer(tokenizer.decode(ids), add_special_tokens=False)["input_ids"][: args.prompt_len]
        prompts.append(tokenizer.decode(cut))
    dataset = datasets.Dataset.from_dict({"prompt": prompts})

    def reward(completions, **kwargs):
        return [float(len(c) % 2) for c in completions]

    steps = args.warmup + args.steps
    total = args.prompts * args.n
    config = GRPOConfig(
        output_dir=str(workdir / "out"), per_device_train_batch_size=args.micro,
        gradient_accumulation_steps=total // args.micro, num_generations=args.n,
        max_completion_length=args.completion_len, learning_rate=1e-6, max_steps=steps, logging_steps=1,
        save_strategy="no", report_to=[], bf16=args.device == "cuda", gradient_checkpointing=args.grad_ckpt,
        use_cpu=args.device == "cpu", temperature=1.0, shuffle_dataset=False, dataloader_num_workers=0,
        seed=0,
    )
    trainer = GRPOTrainer(model=str(model_path), reward_funcs=reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer)

    timings = {"gen": 0.0}
    original = trainer._generate_and_score_completions

    def timed_generate(*a, **kw):
        sync(args.device)
        start = time.perf_counter()
        out = original(*a, **kw)
        sync(args.device)
        timings["gen"] += time.perf_counter() - start
        completion_tokens = int(out["completion_mask"].sum())
        prompt_tokens = int(out["prompt_mask"].sum())
        timings["tokens"] = timings.get("tokens", 0) + completion_tokens + prompt_tokens
        timings["completion_tokens"] = timings.get("completion_tokens", 0) + completion_tokens
        return out

    trainer._generate_and_score_completions = timed_generate
    records = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            sync(args.device)
            timings.update(gen=0.0, tokens=0, completion_tokens=0, start=time.perf_counter())

        def on_step_end(self, *a, **kw):
            sync(args.device)
            wall = time.perf_counter() - timings["start"]
            records.append({"step_s": wall, "generate_s": timings["gen"], "update_s": wall - timings["gen"],
                            "tokens": timings["tokens"], "completion_tokens": timings["completion_tokens"]})

    trainer.add_callback(Timer())
    trainer.train()
    measured = records[args.warmup:]
    peak = peak_flops(args.device)
    tokens = sum(r["tokens"] for r in measured)
    update_s = sum(r["update_s"] for r in measured)
    gen_s = sum(r["generate_s"] for r in measured)
    summary = {
        "size": args.size, "params": params, "trl": trl.__version__, "transformers": transformers.__version__,
        "torch": torch.__version__, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "steps": len(measured), "sequences_per_step": total, "tokens_per_step": tokens / len(measured),
        "generate_s": gen_s / len(measured),
        "generate_tokens_per_s": sum(r["completion_tokens"] for r in measured) / gen_s,
        "update_s": update_s / len(measured), "update_tokens_per_s": tokens / update_s,
        "update_mfu": 6 * params * tokens / update_s / peak if peak else None,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
        "records": records, "args": vars(args),
    }
    print("trl", json.dumps({k: v for k, v in summary.items() if k not in ("records", "args")}), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"trl_{args.size}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
