"""Decode throughput and per-rank memory of an in-process engine replica at tensor-parallel size 1 against TP.

    PYTHONPATH=. python benchmarks/tp_engine_bench.py                          # small model, paged, TP 1 vs 2, CPU gloo
    PYTHONPATH=. python benchmarks/tp_engine_bench.py --backend dynamic --batch 16 --tokens 64

Each size runs as its own set of processes (one per rank, one thread each, gloo over loopback): the leader sends
`--batch` greedy requests of `--tokens` new tokens at once, after a warm-up round; it prints tokens/s, and every rank
its weights' and KV cache's bytes. On CPU the all-reduces cross process boundaries through the kernel and the ranks
share the machine's cores, so the figure shows the protocol's overhead, not what NVLink gives on GPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def _rank(args: argparse.Namespace) -> dict:
    import torch.distributed as dist

    from agentgym.rollout.engines import SamplingParams
    from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine, DynamicCacheEngineConfig
    from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
    from agentgym.rollout.engines.tensor_parallel import TensorParallel

    tp = TensorParallel.consecutive(args.world) if args.world > 1 else None
    if args.backend == "paged":
        engine = PagedEngine(args.model_dir, PagedEngineConfig(
            device="cpu", dtype="float32", max_batch_size=args.batch, max_model_len=256,
            kv_cache_sequences=args.batch, decode_steps=1), tensor_parallel=tp)
    else:
        engine = DynamicCacheEngine(args.model_dir, DynamicCacheEngineConfig(max_batch_size=args.batch),
                                    tensor_parallel=tp)
    out: dict = {"rank": args.rank}
    async with engine:
        out["weight_mib"] = sum(p.numel() * p.element_size() for p in engine.model.parameters()) / 2**20
        if args.backend == "paged":
            out["kv_mib"] = engine._runner.kv.numel() * engine._runner.kv.element_size() / 2**20
        if tp is None or tp.is_leader:
            sampling = SamplingParams(max_new_tokens=args.tokens, temperature=0.0)
            prompts = [[5 + i, 9, 14, 3, 7 + i, 21, 40, 2] for i in range(args.batch)]
            await asyncio.gather(*(engine.generate(p, sampling) for p in prompts))  # warm-up
            started = time.perf_counter()
            outs = await asyncio.gather(*(engine.generate(p, sampling) for p in prompts))
            seconds = time.perf_counter() - started
            out["tokens"] = sum(len(o.token_ids) for o in outs)
            out["tokens_per_s"] = out["tokens"] / seconds
        if tp is not None:
            await asyncio.to_thread(dist.barrier)
    return out


def _run_rank(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    if args.world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://{args.address}", rank=args.rank, world_size=args.world,
                                timeout=timedelta(minutes=5))
    try:
        result = asyncio.run(_rank(args))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    Path(args.out).write_text(json.dumps(result))


def _launch(model_dir: str, world: int, args: argparse.Namespace, tmp: Path) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    outs = [tmp / f"tp{world}-rank{r}.json" for r in range(world)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), "--world", str(world), "--address", address,
                               "--model-dir", model_dir, "--out", str(outs[r]), "--backend", args.backend,
                               "--batch", str(args.batch), "--tokens", str(args.tokens)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        if p.returncode:
            raise RuntimeError(err[-3000:])
    return [json.loads(o.read_text()) for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="small")
    parser.add_argument("--backend", default="paged", choices=["paged", "dynamic"])
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rank", type=int, default=-1)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--address", default="")
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.rank >= 0:
        _run_rank(args)
        return
    from agentgym.models import build_tiny_model

    model_dir = str(build_tiny_model(Path(tempfile.gettempdir()) / "agentgym-models", size=args.size, seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, args.tp):
            ranks = _launch(model_dir, world, args, Path(tmp))
            lead = ranks[0]
            memory = ", ".join(f"rank {r['rank']}: weights {r['weight_mib']:.1f} MiB"
                               + (f", KV {r['kv_mib']:.1f} MiB" if "kv_mib" in r else "") for r in ranks)
            print(f"{args.backend} TP={world}: {lead['tokens_per_s']:.0f} tokens/s ({lead['tokens']} tokens, batch "
                  f"{args.batch}); {memory}")


if __name__ == "__main__":
    main()
