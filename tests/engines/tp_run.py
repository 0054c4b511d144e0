"""One rank of a tensor-parallel engine (or a lone engine with --world 1); writes what its engine produced as JSON.

    python tests/engines/tp_run.py MODEL_DIR OUT_JSON --rank R --world W --address HOST:PORT --backend dynamic|paged
        [--num-blocks N --block-size N]

Run as W processes by tests/engines/test_tensor_parallel.py. The leader (rank 0) generates a batch of greedy and
seeded sampled requests at once, every rank then loads the same new full weights (each keeps its shard), releases
and resumes its memory, and the leader generates again. The followers take part in every step without requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from agentgym.rollout.engines import SamplingParams
from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine, DynamicCacheEngineConfig
from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
from agentgym.rollout.engines.tensor_parallel import TensorParallel
from agentgym.rollout.engines.weights import read_weights

PROMPTS = [[5, 9, 14, 3], [7, 7, 21, 40, 2, 11, 30], [60, 4], [8, 100, 13, 12, 19, 3, 3, 90, 17]]


def requests() -> list[tuple[list[int], SamplingParams]]:
    greedy = [(p, SamplingParams(max_new_tokens=12, temperature=0.0)) for p in PROMPTS]
    sampled = [(p, SamplingParams(max_new_tokens=12, temperature=1.0, seed=100 + i)) for i, p in enumerate(PROMPTS[:2])]
    return greedy + sampled


def new_weights(model_dir: str) -> dict[str, torch.Tensor]:
    """The model's weights moved by seeded noise (what a training step would hand over)."""
    gen = torch.Generator().manual_seed(7)
    return {k: v.float() + 0.02 * torch.randn(v.shape, generator=gen) for k, v in sorted(read_weights(model_dir).items())}


async def run(args: argparse.Namespace) -> dict:
    tp = TensorParallel.consecutive(args.world) if args.world > 1 else None
    if args.backend == "paged":
        engine = PagedEngine(args.model_dir, PagedEngineConfig(device="cpu", dtype="float32", max_batch_size=8,
                                                               max_model_len=64, kv_cache_sequences=8, decode_steps=2,
                                                               num_blocks=args.num_blocks, block_size=args.block_size),
                             tensor_parallel=tp)
    else:
        engine = DynamicCacheEngine(args.model_dir, DynamicCacheEngineConfig(max_batch_size=8), tensor_parallel=tp)
    leader = tp is None or tp.is_leader
    out: dict = {"rank": args.rank}
    if args.fail_follower_step:
        return await _one_rank_fails(engine, leader, args.fail_follower_step, out)
    async with engine:
        out["q_proj_rows"] = engine.model.model.layers[0].self_attn.q_proj.weight.shape[0]
        out["sharded"] = sorted(engine.shard_slices)
        if args.backend == "paged":
            out["kv_heads"] = engine._runner.kv.shape[2]
        if leader:
            first = await asyncio.gather(*(engine.generate(p, s) for p, s in requests()))
            out["first"] = [[o.token_ids, o.logprobs, o.finish_reason] for o in first]
        else:
            try:
                await engine.generate(PROMPTS[0], SamplingParams(max_new_tokens=2))
            except Exception as exc:  # a follower takes no requests
                out["follower_refused"] = str(exc)
        await asyncio.to_thread(dist.barrier) if tp is not None else None
        await engine.update_weights(new_weights(args.model_dir))
        await engine.release_memory_occupation()
        await engine.resume_memory_occupation()
        if leader:
            second = await asyncio.gather(*(engine.generate(p, s) for p, s in requests()))
            out["second"] = [[o.token_ids, o.logprobs, o.finish_reason] for o in second]
        await asyncio.to_thread(dist.barrier) if tp is not None else None
        if args.backend == "paged":
            out["preemptions"] = engine.stats.preemptions
        shards = engine.model.state_dict()
        out["shard_sums"] = {k: float(v.double().sum()) for k, v in shards.items()}
    return out


async def _one_rank_fails(engine, leader: bool, at_step: int, out: dict) -> dict:
    """The follower's step `at_step` fails where the leader's does not; the leader's requests must fail soon."""
    engine.follower_failure_grace_s = 2.0
    if not leader:
        mirror, calls = engine._mirror_step, [0]

        def failing(message):
            calls[0] += 1
            if calls[0] == at_step:
                raise RuntimeError("a step that failed on this rank only (test)")
            return mirror(message)

        engine._mirror_step = failing
    await engine.start()
    if leader:
        start = time.monotonic()
        try:
            await asyncio.gather(*(engine.generate(p, s) for p, s in requests()))
        except Exception as exc:
            out["leader_error"] = f"{type(exc).__name__}: {exc}"
        out["leader_seconds"] = time.monotonic() - start
        return out
    await asyncio.sleep(120)  # the follower leaves the process before this ends
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--address", default="")
    parser.add_argument("--backend", default="dynamic", choices=["dynamic", "paged"])
    parser.add_argument("--num-blocks", type=int, default=None, help="paged: a cache this small preempts sequences")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--fail-follower-step", type=int, default=0, help="the follower's Nth step fails (only there)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://{args.address}", rank=args.rank, world_size=args.world,
                                timeout=timedelta(minutes=3))
    try:
        result = asyncio.run(run(args))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
