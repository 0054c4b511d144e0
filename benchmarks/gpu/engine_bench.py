"""Decode throughput of the in-process engines on one device, side by side, plus the paged engine's logprob gap
to the trainer's recomputation.

    python benchmarks/gpu/engine_bench.py --size 0.5b --concurrency 64 256 --out $OUT      # GPU
    python benchmarks/gpu/engine_bench.py --size tiny --device cpu --concurrency 4 --new-tokens 32 --engines paged dynamic

Every request is a random `--prompt-len`-token prompt, sampled at temperature 1 for exactly `--new-tokens`
tokens (eos ids are removed so no request stops early), all submitted at once: sampled tokens / wall time.
Each engine runs the workload twice and reports the second run (the first captures graphs / compiles).
Engines: `paged` (ours), `dynamic` (the previous in-process engine), `hf_static` (transformers `generate` with
a static cache; padded, fixed batch, no logprobs), `hf_cb` (transformers continuous batching, `generate_batch`).
"""

from __future__ import annotations

import argparse
import asyncio
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

from agentgym.rollout.engines.base import SamplingParams  # noqa: E402


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def prompts_for(args, vocab: int, count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(10, vocab) for _ in range(args.prompt_len)] for _ in range(count)]


async def run_engine(engine, prompts, new_tokens: int) -> tuple[float, list]:
    sampling = SamplingParams(max_new_tokens=new_tokens, temperature=1.0)
    start = time.perf_counter()
    outs = await asyncio.gather(*(engine.generate(p, sampling) for p in prompts))
    return time.perf_counter() - start, outs


async def bench_ours(kind: str, args, model_path: Path, concurrency: int, decode_steps: int = 4) -> dict:
    from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
    from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine, DynamicCacheEngineConfig

    dtype = "bfloat16" if args.device == "cuda" else "float32"
    if kind == "paged":
        engine = PagedEngine(model_path, PagedEngineConfig(
            device=args.device, dtype=dtype, max_batch_size=max(concurrency, 1), max_model_len=args.max_model_len,
            cuda_graphs=not args.no_graphs, decode_steps=decode_steps, fuse_elementwise=not args.no_fuse))
    else:
        engine = DynamicCacheEngine(model_path, DynamicCacheEngineConfig(
            device=args.device, dtype=dtype, max_batch_size=concurrency, max_prefill_tokens=65536,
            intra_op_threads=None if args.device == "cuda" else 1))
    result: dict = {"engine": kind, "concurrency": concurrency}
    if kind == "paged":
        result["decode_steps"] = decode_steps
    async with engine:
        engine.eos_token_ids = frozenset()  # every request samples exactly new_tokens tokens
        vocab = engine.model.config.vocab_size
        new_tokens = args.new_tokens if kind == "paged" else args.baseline_new_tokens
        runs = []
        for run in range(2):
            prompts = prompts_for(args, vocab, concurrency, seed=run)
            sync(args.device)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds, outs = await run_engine(engine, prompts, new_tokens)
            sync(args.device)
            sampled = sum(len(o.token_ids) for o in outs)
            runs.append({"seconds": seconds, "sampled_tokens": sampled, "tokens_per_s": sampled / seconds})
        result.update(runs[-1], first_run_tokens_per_s=runs[0]["tokens_per_s"], new_tokens=new_tokens)
        if args.device == "cuda":
            result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            result["memory_reserved_gib"] = torch.cuda.memory_reserved() / 2**30
        if kind == "paged":
            result["engine_stats"] = engine.stats.as_dict()
            if args.profile and args.device == "cuda":
                result["decode_profile"] = profile_decode(engine, concurrency, args)
            if args.logprob_check and concurrency == args.concurrency[0]:
                result["logprob_gap"] = await logprob_gap(args, model_path, prompts[:16], outs[:16])
    del engine
    torch.cuda.empty_cache() if args.device == "cuda" else None
    return result


def profile_decode(engine, rows: int, args) -> list[str]:
    """Kernel time by name of a few eager decode steps at full batch and full context (the graphs replay these)."""
    from torch.profiler import ProfilerActivity, profile

    from agentgym.rollout.engines.paged.runner import DecodeRow

    runner = engine._runner
    blocks = -(-(args.prompt_len + args.new_tokens) // runner.block_size)
    tables = [list(range(1 + i * blocks, 1 + (i + 1) * blocks)) for i in range(rows)]
    positions = [blocks * runner.block_size - runner.decode_steps] * rows
    decode_rows = [DecodeRow(token=1, position=p, table_row=i, inv_temperature=1.0, greedy=False, top_k=runner.vocab,
                             top_p=1.0, steps=runner.decode_steps, uniforms=[0.5] * runner.decode_steps)
                   for i, p in enumerate(positions)]
    with torch.inference_mode():
        runner.set_table_rows([(i, 0, t) for i, t in enumerate(tables)])
        runner._stage(decode_rows, rows)
        runner._decode_step(rows, blocks, False)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                runner._decode_step(rows, blocks, False)
            torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70)
    kernels = sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA") / 3
    lines = table.splitlines() + [f"kernels per decode call (eager, {runner.decode_steps} steps): {kernels:.0f}"]
    if runner.cuda_graphs:
        import bisect

        key = (runner.batch_buckets[bisect.bisect_left(runner.batch_buckets, rows)],
               runner.block_buckets[bisect.bisect_left(runner.block_buckets, blocks)], False)
        with torch.inference_mode():
            runner._capture(key) if key not in runner._graphs else None
            graph, _ = runner._graphs[key]
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(20):
                graph.replay()
            end.record()
            torch.cuda.synchronize()
        per_call = start.elapsed_time(end) / 20
        lines.append(f"graph replay GPU time {key}: {per_call:.3f} ms per call, {per_call / runner.decode_steps:.3f} ms per step")
    return lines


async def logprob_gap(args, model_path: Path, prompts, outs) -> dict:
    """The trainer's recomputed old log-probs (its own forward: packed rows, bf16 mixed precision on CUDA) on
    the engine's sampled tokens, against the engine's logprobs."""
    from agentgym.config import load_config
    from agentgym.trajectory import Trajectory
    from agentgym.trainer.driver import RLTrainer
    from agentgym.trainer.workers import LocalWorkerGroup

    overrides = [
        f"actor_rollout_ref.model.path={model_path}", f"trainer.device={args.device}", "trainer.use_ray=false",
        "algorithm.adv_estimator=grpo", "data.train_batch_size=1", f"actor_rollout_ref.rollout.n={len(outs)}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1", "actor_rollout_ref.model.use_remove_padding=true",
        "actor_rollout_ref.actor.optim.lr=0", "trainer.save_freq=-1", "trainer.logger=[console]",
        f"data.max_response_length={args.new_tokens}",
    ] + (["actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: bf16, reduce_dtype: fp32}"]
         if args.device == "cuda" else [])
    config = load_config(None, overrides)
    group = LocalWorkerGroup(config, total_steps=1, roles=("actor",), distributed=args.device == "cuda")
    trainer = RLTrainer(config, workers=group)
    trajs = [Trajectory(uid=str(i), group_id="0", prompt_ids=p, response_ids=o.token_ids,
                        loss_mask=[1] * len(o.token_ids), rollout_logprobs=o.logprobs, final_score=float(i % 2))
             for i, (p, o) in enumerate(zip(prompts, outs))]
    try:
        metrics = await trainer.train_step(trajs, step=1)
    finally:
        trainer.close()
    return {"sequences": len(trajs), "tokens": sum(len(t.response_ids) for t in trajs),
            "mean_abs_diff": metrics.get("rollout/logprob_diff/mean"), "max_abs_diff": metrics.get("rollout/logprob_diff/max")}


def bench_hf(kind: str, args, model_path: Path, concurrency: int) -> dict:
    from transformers import AutoModelForCausalLM, GenerationConfig

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(args.device).eval()
    vocab = model.config.vocab_size
    new_tokens = args.baseline_new_tokens
    gen = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
    runs = []
    for run in range(2):
        prompts = prompts_for(args, vocab, concurrency, seed=run)
        sync(args.device)
        start = time.perf_counter()
        with torch.no_grad():  # generate_batch writes its own buffers in place: no inference_mode here
            if kind == "hf_static":
                ids = torch.tensor(prompts, device=args.device)
                out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen,
                                     cache_implementation="static")
                sampled = int((out.shape[1] - ids.shape[1]) * out.shape[0])
            else:
                gen.num_return_sequences = 1
                results = model.generate_batch(inputs=prompts, generation_config=gen, progress_bar=False)
                sampled = sum(len(r.generated_tokens) for r in results.values())
        sync(args.device)
        seconds = time.perf_counter() - start
        runs.append({"seconds": seconds, "sampled_tokens": sampled, "tokens_per_s": sampled / seconds})
    result = {"engine": kind, "concurrency": concurrency, "new_tokens": new_tokens, **runs[-1],
              "first_run_tokens_per_s": runs[0]["tokens_per_s"]}
    if args.device == "cuda":
        result["memory_reserved_gib"] = torch.cuda.memory_reserved() / 2**30
    del model
    torch.cuda.empty_cache() if args.device == "cuda" else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="0.5b")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--baseline-new-tokens", type=int, default=128,
                        help="new tokens for the slower baselines (tok/s hardly depends on it; saves device time)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--engines", nargs="+", default=["paged", "dynamic", "hf_static", "hf_cb"])
    parser.add_argument("--no-graphs", action="store_true")
    parser.add_argument("--no-fuse", action="store_true", help="paged: the model's own norm/rope/activation modules")
    parser.add_argument("--decode-steps", type=int, nargs="+", default=[4],
                        help="paged engine: tokens per sequence per decode call; several values run side by side")
    parser.add_argument("--profile", action="store_true", help="kernel table of eager decode steps (paged)")
    parser.add_argument("--no-logprob-check", dest="logprob_check", action="store_false")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "transformers", "ContinuousBatchingLogger"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from agentgym.models.build import build_tiny_model

    model_path = build_tiny_model(Path(os.environ.get("AGENTGYM_MODEL_DIR", tempfile.mkdtemp())), size=args.size, seed=0)
    results = []
    for concurrency in args.concurrency:
        runs = [(kind, k) for kind in args.engines for k in (args.decode_steps if kind == "paged" else [1])]
        for kind, k in runs:
            try:
                if kind in ("paged", "dynamic"):
                    res = asyncio.run(bench_ours(kind, args, model_path, concurrency, k))
                else:
                    res = bench_hf(kind, args, model_path, concurrency)
            except Exception as exc:  # one engine failing must not lose the others' figures
                res = {"engine": kind, "concurrency": concurrency, "error": repr(exc)[:500]}
            res["size"] = args.size
            print("engine-bench", json.dumps(res), flush=True)
            results.append(res)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"engine_{args.size}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
