"""CUDA IPC weight hand-over between two processes on one GPU, as a Ray trainer rank and the driver's engine do it.

    python benchmarks/gpu/weight_ipc_check.py --size 0.5b

The parent builds the model on the GPU (fp32, as the trainer holds it), exports it in bf16 buckets and shares
CUDA IPC handles (`weight_export`); a spawned child maps them (`weight_import.PackedWeights`), copies them into
its own bf16 copy of the model (`load_state_dict_in_place`) and returns a checksum per weight. It prints the
export, hand-over and copy times and whether every weight arrived bit-exact. CPU tests cannot cover this: CUDA
cannot open a handle in the process that made it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _checksums(tensors) -> dict[str, float]:
    return {k: float(v.double().sum()) for k, v in tensors.items()}


def child(model_path: str, inbox, outbox) -> None:
    sys.path.insert(0, str(ROOT))
    from transformers import AutoModelForCausalLM

    from agentgym.rollout.engines.weights import load_state_dict_in_place

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).cuda()
    torch.nn.init.zeros_(model.model.norm.weight)  # must be overwritten by the import
    outbox.put("ready")
    packed = inbox.get()
    torch.cuda.synchronize()
    start = time.perf_counter()
    load_state_dict_in_place(model, packed)
    seconds = time.perf_counter() - start
    sums = _checksums(model.state_dict())
    packed.close()
    outbox.put({"copy_s": seconds, "sums": sums})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="0.5b")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from agentgym.models.build import build_tiny_model
    from agentgym.trainer.workers.weight_export import export_weights
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(Path("/tmp/agentgym_models"), size=args.size, seed=0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda()
    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=child, args=(str(path), inbox, outbox))
    proc.start()
    assert outbox.get(timeout=300) == "ready"
    torch.cuda.synchronize()
    start = time.perf_counter()
    export = export_weights(model, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    export_s = time.perf_counter() - start
    shared = export.share(ipc=True)
    start = time.perf_counter()
    inbox.put(shared)
    got = outbox.get(timeout=300)
    handoff_s = time.perf_counter() - start
    expected = _checksums({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    bad = [k for k, v in expected.items() if got["sums"].get(k) != v]
    first = {"export_s": export_s, "handoff_and_copy_s": handoff_s, "child_copy_s": got["copy_s"],
             "weights": len(expected), "mismatched": bad[:5], "buckets": len(shared.buckets),
             "bucket_bytes": export.packed.nbytes}
    proc.join(timeout=60)
    line = {"ipc_check": "ok" if not first["mismatched"] else "MISMATCH", **first,
            "device": torch.cuda.get_device_name()}
    print("weight-ipc", json.dumps(line), flush=True)
    if args.out:
        Path(args.out, "weight_ipc_check.json").write_text(json.dumps(line, indent=2))


if __name__ == "__main__":
    main()
