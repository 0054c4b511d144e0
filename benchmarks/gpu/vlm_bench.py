"""Vision-language rollout and update throughput at Qwen2.5-VL-3B shapes (random init), next to the same language
model without its vision tower, plus host/GPU memory over repeated rollout steps.

    python benchmarks/gpu/vlm_bench.py --out $OUT                      # GPU: Qwen2.5-VL-3B shapes, bf16
    python benchmarks/gpu/vlm_bench.py --tiny --device cpu             # CPU check: the tiny Qwen2.5-VL

Rollout: `--batch` requests at once through an in-process engine (`--engine`: the paged engine, the GPU default,
or the dynamic-cache one), each one `--image-size`^2 image (448 -> 256 image tokens) plus `--prompt-len` text tokens, sampling exactly
`--new-tokens` tokens; the text-only run gives the same language model a prompt of the same total length in text
tokens. Update: forward + backward + AdamW over `--batch` sequences of prompt + `--response-len` tokens, padded
micro-batches of `--micro` sequences, the trainer's own forward (`forward_policy`, chunked log-prob head).
Memory: `--memory-steps` rollout steps with fresh images each; RSS and CUDA allocated after each step.
Nothing is downloaded: models are built from configs in memory, images are random pixels.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agentgym.models.vlm import QWEN25_VL_3B, VLM_SHAPES, qwen25_vl_config  # noqa: E402
from agentgym.multimodal.processor import EncodedImage, ImageInputs  # noqa: E402
from agentgym.rollout.engines.base import SamplingParams  # noqa: E402

# Qwen2.5-VL's special token ids (config.json of the checkpoints).
TOKEN_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_models(args):
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    shape = dict(VLM_SHAPES["tiny-vl"]) if args.tiny else dict(QWEN25_VL_3B)
    vocab = 4100 if args.tiny else 151936
    # Tiny: the four vision tokens take the last ids; random text ids stay below them (see `text_id`).
    ids = {k: (vocab - 4 + i if args.tiny else v) for i, (k, v) in enumerate(TOKEN_IDS.items())}
    vl_config = qwen25_vl_config(shape, vocab_size=vocab, token_ids=ids, eos_token_id=0, pad_token_id=0,
                                 bos_token_id=None)
    text = {k: v for k, v in shape["text"].items() if k != "vocab_size"}
    text_config = Qwen2Config(**text, vocab_size=vocab, rms_norm_eps=1e-6, eos_token_id=0, pad_token_id=0,
                              rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0})
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(args.device):
            torch.manual_seed(0)
            vlm = Qwen2_5_VLForConditionalGeneration(vl_config)
            lm = Qwen2ForCausalLM(text_config)
    finally:
        torch.set_default_dtype(previous)
    for model in (vlm, lm):
        model.config._attn_implementation = "sdpa"
    processor = Qwen2VLImageProcessorPil(min_pixels=shape["min_pixels"], max_pixels=max(shape["max_pixels"], args.image_size ** 2))
    return vlm, lm, processor, ids["image_token_id"], ids["vision_start_token_id"], ids["vision_end_token_id"]


def random_image(processor, size: int, rng: np.random.Generator) -> EncodedImage:
    from PIL import Image

    from agentgym.multimodal.images import as_png

    img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    out = processor(images=[img], return_tensors="pt")
    grid = tuple(int(x) for x in out["image_grid_thw"][0])
    return EncodedImage(as_png(img), out["pixel_values"], grid, grid[0] * grid[1] * grid[2] // processor.merge_size ** 2)


def text_id(rng: random.Random, vocab: int) -> int:
    """A random id below every special token (Qwen2.5's start at 151643; the tiny model's vision ids are last)."""
    return rng.randrange(10, min(vocab - 4, 151640))


def vl_prompt(args, image: EncodedImage, pad: int, start: int, end: int, vocab: int, rng: random.Random) -> list[int]:
    text = [text_id(rng, vocab) for _ in range(args.prompt_len)]
    half = len(text) // 2
    return text[:half] + [start] + [pad] * image.num_tokens + [end] + text[half:]


async def rollout(engine, prompts, images, new_tokens: int) -> tuple[float, list]:
    sampling = SamplingParams(max_new_tokens=new_tokens, temperature=1.0)
    start = time.perf_counter()
    outs = await asyncio.gather(*(engine.generate(p, sampling, **({"images": im} if im is not None else {}))
                                  for p, im in zip(prompts, images)))
    return time.perf_counter() - start, outs


def logprob_gap(model, device: str, prompts, images, outs, count: int = 4) -> dict:
    """|engine logprob - the model's own full forward (pixels, 3-D rotary positions)| over the sampled tokens.

    A random model can sample an image placeholder; the reference forward would read it as a second image with no
    pixels behind it, so each sequence is scored up to its first one (the agent loop ends a turn there too)."""
    from agentgym.multimodal.processor import rope_positions

    placeholder = getattr(model.config, "image_token_id", None)
    gaps = []
    with torch.inference_mode():
        for prompt, image, out in list(zip(prompts, images, outs))[:count]:
            cut = next((i for i, t in enumerate(out.token_ids) if t == placeholder), len(out.token_ids))
            if cut == 0:
                continue
            token_ids, logprobs = out.token_ids[:cut], out.logprobs[:cut]
            ids = torch.tensor([prompt + token_ids], device=device)
            kwargs = {}
            if image is not None:
                grid = image.image_grid_thw.to(device)
                kwargs = dict(pixel_values=image.pixel_values.to(device), image_grid_thw=grid,
                              position_ids=rope_positions(model, ids.cpu(), grid.cpu())[0].to(device))
            logits = model(input_ids=ids, **kwargs).logits[0, len(prompt) - 1 : -1].float()
            ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(token_ids, device=device)[:, None])[:, 0]
            gaps.append((ref - torch.tensor(logprobs, device=device)).abs())
    gap = torch.cat(gaps)
    return {"sequences": len(gaps), "mean": float(gap.mean()), "max": float(gap.max())}


def make_engine(args, model):
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    threads = None if args.device == "cuda" else 1
    if args.engine == "paged":
        from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig

        image_tokens = (args.image_size // 28) ** 2
        return PagedEngine.from_model(model, eos_token_ids=[], config=PagedEngineConfig(
            device=args.device, dtype=dtype, max_batch_size=args.batch, intra_op_threads=threads,
            max_model_len=args.prompt_len + image_tokens + 2 + args.new_tokens + 64,
            gpu_memory_utilization=0.5, cuda_graphs=args.device == "cuda"))
    from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine, DynamicCacheEngineConfig

    return DynamicCacheEngine.from_model(model, eos_token_ids=[], config=DynamicCacheEngineConfig(
        device=args.device, dtype=dtype, max_batch_size=args.batch, max_prefill_tokens=1 << 20,
        intra_op_threads=threads))


async def bench_rollout(args, model, processor, token_ids, vision: bool) -> dict:
    pad, start, end = token_ids
    vocab = model.config.get_text_config().vocab_size
    engine = make_engine(args, model)
    result: dict = {"model": "vlm" if vision else "text-only", "batch": args.batch, "engine": args.engine}
    memory = []
    async with engine:
        runs = []
        steps = max(2, args.memory_steps if vision else 2)
        for step in range(steps):
            rng, nrng = random.Random(step), np.random.default_rng(step)
            encode_start = time.perf_counter()
            images = [random_image(processor, args.image_size, nrng) for _ in range(args.batch)]
            encode_s = time.perf_counter() - encode_start
            prompts = [vl_prompt(args, im, pad, start, end, vocab, rng) for im in images]
            if not vision:  # same total prompt length, all text
                prompts = [[t if t not in (pad, start, end) else text_id(rng, vocab) for t in p]
                           for p in prompts]
            inputs = [ImageInputs((im,)) for im in images] if vision else [None] * len(prompts)
            sync(args.device)
            seconds, outs = await rollout(engine, prompts, inputs, args.new_tokens)
            sampled = sum(len(o.token_ids) for o in outs)
            sync(args.device)
            if step == 1:
                result["logprob_gap"] = logprob_gap(model, args.device, prompts, inputs, outs)
            runs.append({"seconds": seconds, "sampled_tokens": sampled, "tokens_per_s": sampled / seconds,
                         "image_encode_s": encode_s if vision else 0.0, "prompt_tokens": len(prompts[0])})
            del images, inputs, prompts, outs
            gc.collect()
            memory.append({"step": step, "rss_mb": rss_mb(),
                           "cuda_allocated_mb": torch.cuda.memory_allocated() / 2**20 if args.device == "cuda" else 0.0})
        result.update(runs[1], first_run_tokens_per_s=runs[0]["tokens_per_s"])
        if args.engine == "paged":
            stats = engine.stats.as_dict()
            result["engine_stats"] = {k: stats[k] for k in ("images_encoded", "prefilled_tokens", "cached_tokens",
                                                            "graph_captures", "decode_attention", "fused_elementwise")}
    if vision and args.memory_steps:
        result["memory"] = {"steps": len(memory), "rss_mb_after_step2": memory[1]["rss_mb"],
                            "rss_mb_last": memory[-1]["rss_mb"], "rss_growth_mb": memory[-1]["rss_mb"] - memory[1]["rss_mb"],
                            "cuda_allocated_mb_after_step2": memory[1]["cuda_allocated_mb"],
                            "cuda_allocated_mb_last": memory[-1]["cuda_allocated_mb"], "per_step": memory}
    return result


def bench_update(args, model, processor, token_ids, vision: bool) -> dict:
    from agentgym.trainer.batching import SampleBatch, plan_update
    from agentgym.trainer.workers.fast_forward import install_logprob_head
    from agentgym.trainer.workers.model import forward_policy

    pad, start, end = token_ids
    vocab = model.config.get_text_config().vocab_size
    from agentgym.multimodal.vision_attention import use_vision_attention

    install_logprob_head(model)
    use_vision_attention(model)  # what the trainer's model loading does
    model.train()
    for p in model.parameters():  # the rollout engine adopted the same module and froze it
        p.requires_grad_(True)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optim = torch.optim.AdamW(model.parameters(), lr=1e-6)
    rng, nrng = random.Random(0), np.random.default_rng(0)
    images = [random_image(processor, args.image_size, nrng) for _ in range(args.batch)]
    prompts = [vl_prompt(args, im, pad, start, end, vocab, rng) for im in images]
    if not vision:
        prompts = [[t if t not in (pad, start, end) else text_id(rng, vocab) for t in p] for p in prompts]
    responses = [[text_id(rng, vocab) for _ in range(args.response_len)] for _ in prompts]
    batch = SampleBatch(
        [torch.tensor(p + r) for p, r in zip(prompts, responses)], [len(p) for p in prompts],
        [str(i) for i in range(len(prompts))],
        {"loss_mask": [torch.ones(len(r)) for r in responses], "rollout_log_probs": [torch.zeros(len(r)) for r in responses]},
        [{"pixel_values": im.pixel_values, "image_grid_thw": torch.tensor([im.grid_thw])} for im in images] if vision else [])
    [minibatches] = plan_update(batch, [], 1, groups_per_minibatch=len(prompts), micro_batch_size=args.micro, padded=True)
    runs = []
    for _ in range(2):
        sync(args.device)
        began = time.perf_counter()
        tokens = 0
        for micros in minibatches:
            for micro in micros:
                micro = micro.to(args.device)
                log_probs, _ = forward_policy(model, micro)
                (-(log_probs.float()).sum() / micro.num_tokens).backward()
                tokens += micro.total_tokens
            optim.step()
            optim.zero_grad(set_to_none=True)
        sync(args.device)
        seconds = time.perf_counter() - began
        runs.append({"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds})
    out = {"model": "vlm" if vision else "text-only", "batch": args.batch, "micro": args.micro, **runs[-1],
           "first_run_tokens_per_s": runs[0]["tokens_per_s"]}
    if args.device == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    del optim
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny Qwen2.5-VL (CPU check) instead of 3B shapes")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--prompt-len", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--response-len", type=int, default=None)
    parser.add_argument("--micro", type=int, default=None)
    parser.add_argument("--memory-steps", type=int, default=50)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--engine", choices=["paged", "dynamic"], default=None,
                        help="rollout engine (default: paged on CUDA, dynamic on CPU)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["rollout", "update", "text"])
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    defaults = (dict(batch=4, image_size=112, prompt_len=32, new_tokens=16, response_len=32, micro=2) if args.tiny
                else dict(batch=64, image_size=448, prompt_len=256, new_tokens=256, response_len=512, micro=8))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.engine is None:
        args.engine = "paged" if args.device == "cuda" else "dynamic"
    if args.tiny and args.device == "cpu":
        torch.set_num_threads(1)
    vlm, lm, processor, *token_ids = build_models(args)
    report: dict = {"shapes": "tiny-vl" if args.tiny else "Qwen2.5-VL-3B", "device": args.device,
                    "args": {k: v for k, v in vars(args).items() if k != "out"},
                    "params_vlm_m": sum(p.numel() for p in vlm.parameters()) / 1e6,
                    "params_lm_m": sum(p.numel() for p in lm.parameters()) / 1e6, "rollout": [], "update": []}
    pairs = [(vlm, True)] + ([] if "text" in args.skip else [(lm, False)])
    if "rollout" not in args.skip:
        for model, vision in pairs:
            report["rollout"].append(asyncio.run(bench_rollout(args, model, processor, token_ids, vision)))
            print(json.dumps({k: v for k, v in report["rollout"][-1].items() if k != "memory"}), flush=True)
    if "update" not in args.skip:
        for model, vision in pairs:
            report["update"].append(bench_update(args, model, processor, token_ids, vision))
            print(json.dumps(report["update"][-1]), flush=True)
    memory = next((r.get("memory") for r in report["rollout"] if r.get("memory")), None)
    if memory:
        print(json.dumps({k: v for k, v in memory.items() if k != "per_step"}), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "vlm_bench.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
