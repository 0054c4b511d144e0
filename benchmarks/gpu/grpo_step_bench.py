"""Our GRPO step, phase by phase, on one device: multi-turn rollout with the code tool (DynamicCacheEngine, a local
sandbox server), old log-probs, FSDP2 actor update, weight sync; then the update alone on a TRL-shaped batch.

    python benchmarks/gpu/grpo_step_bench.py --size 0.5b --out $OUT        # GPU (Qwen2.5 shapes, random init)
    python benchmarks/gpu/grpo_step_bench.py --size tiny --device cpu      # CPU smoke test

A random-init model never writes a tool call, so the engine is wrapped: each of the first `--tool-turns`
assistant turns is the model's own sampled tokens (up to `--turn-tokens`) followed by a scripted code-interpreter
call (its tokens carry logprob 0); the call really runs in the sandbox and its output is appended as a tool turn,
and the teacher interaction answers turns without a call. So generation, tool execution, re-prefill of the growing
context and the masked multi-turn layout are all real; only the decision to call the tool is scripted.

The update-only part feeds the trainer synthetic trajectories of exactly the shape the TRL run uses
(`--prompts` x `--n` sequences of `--prompt-len` + `--completion-len` tokens, all completion tokens trained),
one optimizer step per RL step, so update tokens/s compare like for like. MFU = 6 * params * tokens / time / peak
(attention FLOPs not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agentgym.config import load_config  # noqa: E402
from agentgym.rollout.engines.base import GenerateOutput  # noqa: E402
from agentgym.trajectory import Trajectory  # noqa: E402
from agentgym.trainer.driver import RLTrainer  # noqa: E402
from agentgym.trainer.workers import LocalWorkerGroup  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0}
TOOL_YAML = """tools:
  - class_name: agentgym.tools.sandbox_fusion.SandboxFusionTool
    config:
      sandbox_fusion_url: {url}
      num_workers: 64
      rate_limit: 1000
      burst: 256
      enable_global_rate_limit: false
      default_timeout: 10
      default_language: python
      memory_limit_mb: 256
      max_output_chars: 512
    tool_schema:
      type: function
      function:
        name: code_interpreter
        description: Run a Python program and see its output.
        parameters:
          type: object
          properties:
            code:
              type: string
              description: The program; print what you need.
          required: [code]
"""


def peak_flops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((t * 1e12 for k, t in PEAK_BF16_TFLOPS.items() if k in name), None)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class ToolCallingEngine:
    """Wraps an engine: the first `tool_turns` turns of every episode end in a scripted code-interpreter call."""

    def __init__(self, inner, tokenizer, *, tool_turns: int, turn_tokens: int):
        self.inner = inner
        self.tool_turns = tool_turns
        self.turn_tokens = turn_tokens
        self.turns: dict[str, int] = {}
        self.end_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        self.calls = []
        for k in range(tool_turns):
            call = {"name": "code_interpreter", "arguments": {"code": f"x = {k + 2} ** 20\nprint(x % 1000003, sum(range(10**5)))"}}
            text = f"\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
            self.calls.append(tokenizer.encode(text, add_special_tokens=False) + [self.end_id])
        self.generated = 0
        self.gen_calls = 0

    async def generate(self, prompt_ids, sampling, *, session_id=None):
        from dataclasses import replace

        turn = self.turns.get(session_id, 0)
        self.turns[session_id] = turn + 1
        scripted = self.calls[turn] if turn < self.tool_turns else []
        budget = sampling.max_new_tokens - len(scripted)
        if budget < 1:
            scripted, budget = [], sampling.max_new_tokens
        out = await self.inner.generate(prompt_ids, replace(sampling, max_new_tokens=min(budget, self.turn_tokens)),
                                        session_id=session_id)
        self.generated += len(out.token_ids)
        self.gen_calls += 1
        if not scripted or out.finish_reason == "stop":
            return out
        return GenerateOutput(list(out.token_ids) + scripted, list(out.logprobs) + [0.0] * len(scripted), "stop")

    async def update_weights(self, state_dict=None, *, path=None):
        await self.inner.update_weights(state_dict, path=path)


def start_sandbox(workdir: Path) -> tuple[subprocess.Popen, str]:
    """`python -m sandbox_server` on a free port. Without bubblewrap (the GPU image has none) it runs with
    --insecure-no-isolation: fine for a throughput benchmark of trusted scripted code, never for training."""
    import shutil

    workdir.chmod(0o755)
    args = [sys.executable, "-m", "sandbox_server", "--port", "0", "--work-root", str(workdir)]
    if shutil.which("bwrap") is None:
        args.append("--insecure-no-isolation")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 60
    import re

    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"sandbox server exited with {proc.returncode}: {''.join(seen)[-2000:]}")
            continue
        match = re.search(r"https?://[\w.\-\[\]:]+(?::\d+)?", line)
        if match:
            return proc, match.group(0)
    raise RuntimeError("sandbox server printed no URL within 60 s")


def build_model(size: str, root: Path) -> tuple[Path, int]:
    from agentgym.models.build import build_tiny_model

    path = build_tiny_model(root, size=size, seed=0)
    cfg = json.loads((path / "config.json").read_text())
    h, i, layers, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = h // heads
    attn = h * heads * d + 2 * h * kv * d + heads * d * h + heads * d + 2 * kv * d  # q,k,v (+bias), o
    params = layers * (attn + 3 * h * i + 2 * h) + v * h + h  # tied embedding/head, final norm
    return path, params


def trainer_overrides(args, model_path: Path) -> list[str]:
    return [
        f"actor_rollout_ref.model.path={model_path}", f"trainer.device={args.device}", "trainer.use_ray=false",
        "algorithm.adv_estimator=grpo", f"data.train_batch_size={args.prompts}",
        f"actor_rollout_ref.rollout.n={args.n}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",  # one optimizer step per RL step, like TRL
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={args.max_token_len}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={args.max_token_len * 2}",
        "actor_rollout_ref.model.use_remove_padding=true", f"actor_rollout_ref.model.attn_implementation={args.attn}",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={str(args.grad_ckpt).lower()}",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        f"actor_rollout_ref.actor.use_torch_compile={ {'auto': 'null', 'on': 'true', 'off': 'false'}[args.compile]}",
        f"data.max_response_length={args.max_response}",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=8",
        f"trainer.total_training_steps={args.warmup + args.steps}", "trainer.save_freq=-1",
        "trainer.logger=[console]",
    ] + (["actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: bf16, reduce_dtype: fp32}"]
         if args.device == "cuda" else []) + list(args.set)


async def rl_steps(args, model_path: Path, params: int, workdir: Path) -> dict:
    """Full GRPO steps through RLTrainer.fit: rollout -> old log-probs -> advantages -> update -> weight sync."""
    from transformers import AutoTokenizer

    from agentgym.interactions.registry import load_interactions
    from agentgym.rollout.agent_loop import AgentLoop
    from agentgym.rollout.build import agent_loop_config
    from agentgym.rollout.engines.dynamic_cache import DynamicCacheEngine, DynamicCacheEngineConfig
    from agentgym.tools.registry import build_tools, load_tool_specs
    from agentgym_envs.arithmetic import INTERACTION_CONFIG
    from agentgym_envs.arithmetic.data import ArithmeticTaskConfig
    from agentgym_envs.code_arith import make_rows

    sandbox, url = start_sandbox(Path(tempfile.mkdtemp(prefix="agentgym_sbx_", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)))
    try:
        tool_file = workdir / "tools.yaml"
        tool_file.write_text(TOOL_YAML.format(url=url))
        config = load_config(None, trainer_overrides(args, model_path) + [
            f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tool_file}"])
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        dtype = "bfloat16" if args.device == "cuda" else "float32"
        if args.engine == "paged":
            from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig

            inner = PagedEngine(model_path, PagedEngineConfig(
                device=args.device, dtype=dtype, max_batch_size=args.prompts * args.n, max_model_len=4096,
                intra_op_threads=None if args.device == "cuda" else 1, decode_steps=args.decode_steps))
        else:
            engine_cfg = DynamicCacheEngineConfig(device=args.device, dtype=dtype,
                                                  max_batch_size=args.prompts * args.n, max_prefill_tokens=65536,
                                                  intra_op_threads=None if args.device == "cuda" else 1)
            inner = DynamicCacheEngine(model_path, engine_cfg)
        engine = ToolCallingEngine(inner, tokenizer, tool_turns=args.tool_turns, turn_tokens=args.turn_tokens)
        tools = build_tools(load_tool_specs(tool_file))
        interactions = load_interactions(INTERACTION_CONFIG)
        loop = AgentLoop(engine, tokenizer, tools, interactions, agent_loop_config(config, seed=0))
        rows = make_rows(ArithmeticTaskConfig(num_rows=args.prompts * (args.warmup + args.steps), seed=1))
        rollout_stats = []

        def engine_clock() -> tuple[float, float]:
            stats = inner.stats
            return getattr(stats, "busy_seconds", 0.0), getattr(stats, "handoff_seconds", 0.0)

        def graphs_so_far() -> int:
            from torch._dynamo.utils import counters

            return int(counters["stats"]["unique_graphs"])

        graph_marks = []

        async def collect(batch_rows, step):
            graph_marks.append(graphs_so_far())  # torch.compile graphs made between two rollouts: one step's
            engine.generated = 0
            sync(args.device)
            busy0, handoff0 = engine_clock()
            start = time.perf_counter()
            trajs = await loop.run_batch(batch_rows, n=args.n, group_prefix=f"step{step}-")
            seconds = time.perf_counter() - start
            busy1, handoff1 = engine_clock()
            rollout_stats.append({
                "seconds": seconds, "generated_tokens": engine.generated,
                "engine_busy_s": busy1 - busy0, "engine_handoff_s": handoff1 - handoff0,
                "response_tokens": sum(len(t.response_ids) for t in trajs),
                "model_tokens": sum(sum(t.loss_mask) for t in trajs),
                "tool_calls": sum(t.num_tool_calls for t in trajs),
                "tool_errors": sum(1 for t in trajs for m in t.tool_metrics if m.get("error")),
                "failed": sum(t.failed for t in trajs),
                "assistant_turns": sum(sum(s.role == "assistant" for s in t.turns) for t in trajs) / len(trajs),
            })
            return trajs

        await inner.start()
        group = LocalWorkerGroup(config, total_steps=args.warmup + args.steps, roles=("actor",),
                                 distributed=args.device == "cuda")
        trainer = RLTrainer(config, collect=collect, engine=engine, dataset=rows, workers=group)
        from agentgym.trainer.tracking import MetricsTracker

        tracker = MetricsTracker(workdir / "ckpt", ["console"] if args.verbose else [], args.warmup + args.steps)
        try:
            history = await trainer.fit(tracker=tracker)
        finally:
            tracker.close()
            trainer.close()
            await inner.close()
        from agentgym.tools.sandbox_fusion import aclose_http_sessions

        await aclose_http_sessions()
        graph_marks.append(graphs_so_far())
    finally:
        os.killpg(sandbox.pid, 15)
        sandbox.wait(timeout=10)
    graphs_per_step = [b - a for a, b in zip(graph_marks, graph_marks[1:])]
    measured = list(zip(history, rollout_stats))[args.warmup:]
    peak = peak_flops(args.device)
    tot = lambda key: sum(m[key] for m, _ in measured)  # noqa: E731
    tokens = tot("perf/total_tokens")
    out = {
        "steps": len(measured),
        "trajectories_per_step": args.prompts * args.n,
        "rollout_s": sum(r["seconds"] for _, r in measured) / len(measured),
        "rollout_generated_tokens_per_s": sum(r["generated_tokens"] for _, r in measured) / sum(r["seconds"] for _, r in measured),
        "rollout_response_tokens_per_s": sum(r["response_tokens"] for _, r in measured) / sum(r["seconds"] for _, r in measured),
        "tool_calls_per_step": sum(r["tool_calls"] for _, r in measured) / len(measured),
        "tool_errors": sum(r["tool_errors"] for _, r in measured),
        "failed_trajectories": sum(r["failed"] for _, r in measured),
        "assistant_turns_per_traj": sum(r["assistant_turns"] for _, r in measured) / len(measured),
        "tokens_per_step": tokens / len(measured),
        "model_tokens_per_step": tot("response/model_tokens") / len(measured),
        "old_log_prob_s": tot("timing_s/old_log_prob") / len(measured),
        "old_log_prob_tokens_per_s": tokens / tot("timing_s/old_log_prob"),
        "update_s": tot("timing_s/update_actor") / len(measured),
        "update_tokens_per_s": tokens / tot("timing_s/update_actor"),
        "update_mfu": 6 * params * tokens / tot("timing_s/update_actor") / peak if peak else None,
        "weight_sync_s": tot("timing_s/weight_sync") / len(measured),
        "step_s": (tot("timing_s/rollout") + tot("timing_s/step") + tot("timing_s/weight_sync")) / len(measured),
        # wall time per step as the loop saw it (collect or wait, through the sync): what overlapped modes shorten
        "iteration_s": tot("timing_s/iteration") / len(measured),
        "logprob_diff_mean_incl_scripted_tokens": (tot("rollout/logprob_diff/mean") / len(measured)
                                                   if "rollout/logprob_diff/mean" in measured[0][0] else None),
        "engine": args.engine,
        "engine_stats": inner.stats.as_dict() if hasattr(inner.stats, "as_dict") else None,
        "per_step": [{"rollout_s": r["seconds"], "generated_tokens": r["generated_tokens"],
                      "engine_busy_s": r["engine_busy_s"], "engine_handoff_s": r["engine_handoff_s"],
                      "step_s": m["timing_s/rollout"] + m["timing_s/step"] + m["timing_s/weight_sync"],
                      "old_log_prob_s": m["timing_s/old_log_prob"], "update_s": m["timing_s/update_actor"],
                      "weight_sync_s": m["timing_s/weight_sync"], "graphs_compiled": g}
                     for m, r, g in zip(history, rollout_stats, graphs_per_step)],
    }
    return out


@contextlib.contextmanager
def profile_to(path: Path, *, enabled: bool):
    """Kernel time of one step by operator, written to `path` (the step's wall time and GPU-busy share on top)."""
    if not enabled:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        yield
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    wall = time.perf_counter() - start
    events = prof.key_averages()
    kernels = [e for e in events if str(e.device_type).endswith("CUDA")]
    kinds = {"matmul": ("gemm", "nvjet", "cutlass", "xmma", "cublas"), "attention": ("flash", "fmha", "attn"),
             "compiled (triton)": ("triton",), "nccl": ("nccl",), "optimizer (foreach/fused)": ("foreach", "adam"),
             "copy/cast": ("copy", "memcpy", "memset", "cast"), "reduction": ("reduce", "softmax", "norm"),
             "elementwise": ("elementwise", "vectorized")}
    by_kind: dict[str, float] = {}
    for e in kernels:
        name = e.key.lower()
        kind = next((k for k, keys in kinds.items() if any(x in name for x in keys)), "other")
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_device_time_total / 1e6
    busy = sum(by_kind.values())
    lines = [f"wall {wall:.3f} s (profiled step), kernel time {busy:.3f} s"]
    lines += [f"  {k:28s} {v:7.3f} s  {100 * v / max(busy, 1e-9):5.1f} %" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + events.table(sort_by=sort, row_limit=45, max_name_column_width=90))


async def update_only(args, model_path: Path, params: int, vocab: int, workdir: Path) -> dict:
    overrides = trainer_overrides(args, model_path)
    if args.ray:  # the Ray driver path: one Ray actor per GPU, FSDP2 across them
        overrides = [o for o in overrides if not o.startswith("trainer.use_ray")]
        overrides += ["trainer.use_ray=true", f"trainer.n_gpus_per_node={args.gpus}"]
        config = load_config(None, overrides)
        from agentgym.trainer.workers import start_worker_group

        group = start_worker_group(config, total_steps=args.warmup + args.update_steps + args.profile, roles=("actor",))
    else:
        config = load_config(None, overrides)
        group = LocalWorkerGroup(config, total_steps=args.warmup + args.update_steps + args.profile, roles=("actor",),
                                 distributed=args.device == "cuda")
    trainer = RLTrainer(config, workers=group)
    results = []
    try:
        for step in range(args.warmup + args.update_steps + args.profile):
            rng = random.Random(step)
            trajs = []
            for p in range(args.prompts):
                prompt = [rng.randrange(2, vocab) for _ in range(args.prompt_len)]
                for k in range(args.n):
                    resp = [rng.randrange(2, vocab) for _ in range(args.completion_len)]
                    trajs.append(Trajectory(uid=f"{p}-{k}", group_id=str(p), prompt_ids=prompt, response_ids=resp,
                                            loss_mask=[1] * len(resp), rollout_logprobs=[0.0] * len(resp),
                                            final_score=float(rng.random() < 0.5)))
            sync(args.device)
            profiling = step == args.warmup + args.update_steps  # one extra, unmeasured step
            with profile_to(Path(args.out or workdir) / f"profile_{args.size}{args.tag}.txt", enabled=profiling):
                metrics = await trainer.train_step(trajs, step=step + 1)
            if args.warmup <= step < args.warmup + args.update_steps:
                results.append(metrics)
    finally:
        trainer.close()
    peak = peak_flops(args.device)
    tokens = sum(m["perf/total_tokens"] for m in results)
    update_s = sum(m["timing_s/update_actor"] for m in results)
    return {
        "workers": "ray" if args.ray else "in-process", "world_size": args.gpus if args.ray else 1,
        "steps": len(results), "sequences_per_step": args.prompts * args.n,
        "tokens_per_step": tokens / len(results),
        "update_s": update_s / len(results),
        "update_tokens_per_s": tokens / update_s,
        "update_mfu": 6 * params * tokens / update_s / peak / (args.gpus if args.ray else 1) if peak else None,
        "old_log_prob_tokens_per_s": tokens / sum(m["timing_s/old_log_prob"] for m in results),
        "grad_norm": results[-1]["actor/grad_norm"],
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" and not args.ray else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="tiny", help="tiny | small | 0.5b | 1.5b (agentgym.models shapes)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=256, help="update-only batch: prompt tokens")
    parser.add_argument("--completion-len", type=int, default=512, help="update-only batch: completion tokens")
    parser.add_argument("--max-response", type=int, default=1024, help="multi-turn response budget (tokens)")
    parser.add_argument("--tool-turns", type=int, default=2)
    parser.add_argument("--turn-tokens", type=int, default=128, help="sampled tokens per assistant turn, at most")
    parser.add_argument("--max-token-len", type=int, default=32768, help="ppo_max_token_len_per_gpu (packed)")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--engine", choices=["paged", "dynamic"], default="paged", help="in-process rollout engine")
    parser.add_argument("--decode-steps", type=int, default=4, help="paged engine: tokens per sequence per decode call")
    parser.add_argument("--grad-ckpt", action="store_true")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="actor.use_torch_compile (auto: on for CUDA)")
    parser.add_argument("--profile", action="store_true",
                        help="one more update-only step, unmeasured, under torch.profiler (table in --out)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="measured full GRPO steps")
    parser.add_argument("--update-steps", type=int, default=3, help="measured update-only steps")
    parser.add_argument("--skip-rl", action="store_true")
    parser.add_argument("--ray", action="store_true", help="update-only through Ray actors (trainer.use_ray=true)")
    parser.add_argument("--gpus", type=int, default=1, help="with --ray: ranks (one GPU each)")
    parser.add_argument("--tag", default="", help="suffix of the output file name")
    parser.add_argument("--skip-update", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra trainer override, e.g. --set trainer.rollout_mode=one_step_off (repeatable)")
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="grpo_bench_"))
    model_path, params = build_model(args.size, Path(os.environ.get("AGENTGYM_MODEL_DIR", workdir / "models")))
    vocab = json.loads((model_path / "config.json").read_text())["vocab_size"]
    summary = {"size": args.size, "params": params, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "torch": torch.__version__, "args": vars(args)}
    import transformers

    summary["transformers"] = transformers.__version__
    if not args.skip_update:
        summary["update_only"] = asyncio.run(update_only(args, model_path, params, vocab, workdir))
        print("update-only", json.dumps(summary["update_only"]), flush=True)
    if not args.skip_rl:
        summary["grpo_step"] = asyncio.run(rl_steps(args, model_path, params, workdir))
        print("grpo-step", json.dumps(summary["grpo_step"]), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"ours_{args.size}{args.tag}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
