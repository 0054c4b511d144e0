"""TRL's GRPOTrainer on the smollm_arith task, same model, batch, lengths and learning rate as our job, evaluated by
the same held-out evaluation (our agent loop with the code interpreter, greedy and sampled) every few steps.

    python benchmarks/gpu/real_model_trl.py --model DIR --out OUT [--steps 20] [--prompts 16] [--n 8]

Why TRL's single-turn path: TRL 1.16's tool loop (`GRPOTrainer(tools=...)`) parses calls through a response
schema it sets only for chat templates it knows (Qwen, Llama 3, ...); SmolLM2's ChatML template has no tool support,
so TRL cannot run the multi-turn tool loop on this model. TRL therefore gets the prompt our agent loop renders
(the same system turn with the hermes tool prompt, the same user question, the generation prompt) and writes one
turn; its reward runs that turn's code_interpreter call in our sandbox and scores 1 when the program prints the
right answer (or, with no call, when the teacher's check accepts its answer): the reward our episode gives a correct first
answer, with the tool's result taken as the answer since a single turn never sees it.
Phases per optimizer step, timed as in trl_grpo_bench.py: generation (+ reward) and update.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tag", default="trl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--micro", type=int, default=64)
    parser.add_argument("--completion-len", type=int, default=192)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-rows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a smoke test of this script")
    args = parser.parse_args()
    cuda = args.device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import datasets
    import transformers
    import trl
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from agentgym.config import load_config
    from agentgym.models.chat import chat_text
    from agentgym.parsers import get_parser
    from agentgym.quickstart.job import evaluate, question
    from agentgym.rollout.agent_loop import AgentLoop
    from agentgym.rollout.build import agent_loop_config
    from agentgym.rollout.engines.paged import PagedEngine, PagedEngineConfig
    from agentgym_envs.smollm_arith import ENV_DIR, SmolArithConfig, make_rows
    from agentgym.answers.numeric import response_matches  # the teacher's answer check

    cfg = load_config(ENV_DIR / "quickstart.yaml", [f"actor_rollout_ref.model.path={args.model}", f"trainer.device={args.device}"])
    tools, interactions = load_environment_for()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tool_dicts = [t.tool_schema.model_dump(exclude_none=True) for t in tools.values()]
    task = dict(min_digits=3, max_digits=4, seed=args.seed)
    eval_rows = make_rows(SmolArithConfig(num_rows=args.eval_rows, split="test", **task))
    held_out = {question(r) for r in eval_rows}
    train_rows = [r for r in make_rows(SmolArithConfig(num_rows=1024, split="train", **task)) if question(r) not in held_out]
    prompts = [chat_text(tokenizer, r["prompt"], tool_dicts, add_generation_prompt=True) for r in train_rows]
    dataset = datasets.Dataset.from_dict({
        "prompt": prompts, "ground_truth": [r["reward_model"]["ground_truth"] for r in train_rows]})

    # Our engine and agent loop, on a loop of their own, for the held-out evaluation of TRL's current weights.
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    engine = PagedEngine(args.model, PagedEngineConfig(device=args.device, dtype="bfloat16" if cuda else "float32",
                                                       gpu_memory_utilization=0.15, max_model_len=1024,
                                                       max_batch_size=256 if cuda else 4))
    run(engine.start())
    agent = AgentLoop(engine, tokenizer, tools, interactions, agent_loop_config(cfg, temperature=0.0, seed=args.seed))
    sampler = AgentLoop(engine, tokenizer, tools, interactions, agent_loop_config(cfg, temperature=1.0, seed=args.seed))
    code_tool = tools["code_interpreter"]
    hermes = get_parser("hermes", [code_tool.tool_schema])

    async def score_one(text: str, truth: str) -> float:
        parsed = hermes.parse(text)
        if parsed.calls and parsed.calls[0].name == "code_interpreter":
            instance, _ = await code_tool.create()
            try:
                response, _, _ = await code_tool.execute(instance, dict(parsed.calls[0].arguments))
            finally:
                await code_tool.release(instance)
            lines = (response.text or "").strip().splitlines()
            return float(bool(lines) and lines[-1].strip() == truth)
        return float(response_matches(text, truth))

    def reward(completions, ground_truth, **kwargs):
        async def all_():
            return await asyncio.gather(*(score_one(c, t) for c, t in zip(completions, ground_truth)))
        return list(run(all_()))

    total = args.prompts * args.n
    config = GRPOConfig(
        output_dir=str(out / "trl_out"), per_device_train_batch_size=min(args.micro, total),
        gradient_accumulation_steps=max(1, total // args.micro), num_generations=args.n,
        max_completion_length=args.completion_len, learning_rate=args.lr, max_steps=args.steps, logging_steps=1,
        save_strategy="no", report_to=[], bf16=cuda, use_cpu=not cuda, temperature=1.0, shuffle_dataset=True, seed=args.seed,
        beta=0.0, lr_scheduler_type="constant", warmup_steps=0, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=args.model, reward_funcs=reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer)

    timings = {"gen": 0.0, "completion_tokens": 0, "tokens": 0}
    original = trainer._generate_and_score_completions

    def timed_generate(*a, **kw):
        sync()
        start = time.perf_counter()
        result = original(*a, **kw)
        sync()
        timings["gen"] += time.perf_counter() - start
        timings["completion_tokens"] += int(result["completion_mask"].sum())
        timings["tokens"] += int(result["completion_mask"].sum()) + int(result["prompt_mask"].sum())
        return result

    trainer._generate_and_score_completions = timed_generate
    records, curve = [], []
    clock = {"train_s": 0.0}

    def held_out(step: int) -> None:
        state = {k: v.detach() for k, v in trainer.model.state_dict().items()}
        run(engine.update_weights(state))
        result = evaluate(run(agent.run_batch(eval_rows, group_prefix="eval-")))
        sampled = evaluate(run(sampler.run_batch(eval_rows, group_prefix="eval-")))
        curve.append({"step": step, "rl_seconds": round(clock["train_s"], 2), "accuracy": result.accuracy,
                      "tool_use_correct": result.tool_use_correct, "sampled_accuracy": sampled.accuracy,
                      "sampled_tool_use_correct": sampled.tool_use_correct})
        print("trl-eval", json.dumps(curve[-1]), flush=True)

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            sync()
            timings.update(gen=0.0, tokens=0, completion_tokens=0, start=time.perf_counter())

        def on_step_end(self, state_args, state, control, **kw):
            sync()
            wall = time.perf_counter() - timings["start"]
            clock["train_s"] += wall
            records.append({"step_s": wall, "generate_s": timings["gen"], "update_s": wall - timings["gen"],
                            "tokens": timings["tokens"], "completion_tokens": timings["completion_tokens"]})
            if state.global_step % args.eval_every == 0 or state.global_step == args.steps:
                held_out(state.global_step)

    held_out(0)
    trainer.add_callback(Timer())
    trainer.train()
    measured = records[1:] or records
    gen_s = sum(r["generate_s"] for r in measured)
    upd_s = sum(r["update_s"] for r in measured)
    summary = {
        "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu", "steps": len(records), "sequences_per_step": total,
        "rollout_tokens_per_s": sum(r["completion_tokens"] for r in measured) / gen_s,
        "update_tokens_per_s": sum(r["tokens"] for r in measured) / upd_s,
        "generate_s_per_step": gen_s / len(measured), "update_s_per_step": upd_s / len(measured),
        "train_seconds": clock["train_s"], "curve": curve, "records": records, "args": vars(args),
    }
    (out / f"{args.tag}.json").write_text(json.dumps(summary, indent=2))
    print("trl-summary", json.dumps({k: v for k, v in summary.items() if k not in ("records", "args")}), flush=True)
    run(engine.close())


def load_environment_for():
    """The task's tools (code interpreter, embedded sandbox) and the teacher, as our job builds them."""
    from agentgym.interactions.registry import load_interactions
    from agentgym.tools.registry import build_tools, load_tool_specs
    from agentgym_envs.smollm_arith import INTERACTION_CONFIG, TOOL_CONFIG

    return build_tools(load_tool_specs(TOOL_CONFIG)), load_interactions(INTERACTION_CONFIG)


if __name__ == "__main__":
    main()
