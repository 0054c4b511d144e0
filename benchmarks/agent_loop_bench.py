"""Throughput of the environment layer: the agent loop, sessions, tools and template deltas, with an engine
that answers instantly (no generation cost), so the figures are the layer's own cost.

    python benchmarks/agent_loop_bench.py [--episodes 1000] [--concurrency 1000] [--slow-tool-s 0.5]

Prints trajectories/s and the share of wall time spent outside the engine, then an overlap figure: with a slow
tool in some episodes, the other episodes keep generating (engine calls during the slow tool's sleep).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from agentgym.episode.episode import EpisodeLimits
from agentgym.models import tiny_tokenizer
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.base_tool import BaseTool
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym.tools.schemas import OpenAIFunctionToolSchema, ToolResponse
from agentgym_envs.arithmetic import TOOL_CONFIG


def four_turn_script(conversation: str, session_id: str) -> str:
    """Three calculator calls, then an answer: four assistant turns per episode."""
    done = conversation.count("<tool_response>")
    if done >= 3:
        return "The answer is \\boxed{42}."
    tool = "sleepy" if session_id.endswith("-slow") and done == 0 else "calculator"
    call = {"name": tool, "arguments": {"expression": f"{done + 1}*7"}}
    return f"Step {done + 1}.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"


class SleepyTool(BaseTool):
    def __init__(self, delay: float):
        super().__init__({}, OpenAIFunctionToolSchema.model_validate(
            {"type": "function", "function": {"name": "sleepy", "description": "slow", "parameters": {
                "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}))
        self.delay = delay
        self.sleeps: list[tuple[float, float]] = []

    async def execute(self, instance_id, parameters, **kwargs):
        start = time.perf_counter()
        await asyncio.sleep(self.delay)
        self.sleeps.append((start, time.perf_counter()))
        return ToolResponse(text="7"), 0.0, {}


class TimedEngine(ScriptedEngine):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds = 0.0
        self.call_times: list[float] = []

    async def generate(self, prompt_ids, sampling, *, session_id=None):
        start = time.perf_counter()
        self.call_times.append(start)
        out = await super().generate(prompt_ids, sampling, session_id=session_id)
        self.seconds += time.perf_counter() - start
        return out


async def run(episodes: int, concurrency: int, slow_tool_s: float) -> None:
    tokenizer = tiny_tokenizer()
    tools = {**build_tools(load_tool_specs(TOOL_CONFIG)), "sleepy": SleepyTool(slow_tool_s)}
    engine = TimedEngine(tokenizer, four_turn_script)
    config = AgentLoopConfig(limits=EpisodeLimits(max_assistant_turns=6), max_concurrent_episodes=concurrency, max_response_tokens=4096)
    loop = AgentLoop(engine, tokenizer, tools, config=config)
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}], "extra_info": {"index": i}} for i in range(episodes)]

    start = time.perf_counter()
    trajs = await loop.run_batch(rows, group_prefix="bench-")
    wall = time.perf_counter() - start
    failed = sum(t.failed for t in trajs)
    turns = sum(sum(1 for s in t.turns if s.role == "assistant") for t in trajs) / len(trajs)
    print(f"episodes={episodes} concurrency={concurrency} assistant_turns/episode={turns:.2f} failed={failed}")
    print(f"trajectories/s={episodes / wall:.1f}  wall={wall:.2f}s  engine share={engine.seconds / wall:.1%}  "
          f"environment-layer share={1 - engine.seconds / wall:.1%}")
    print(f"environment layer alone (wall minus time inside the engine): {episodes / (wall - engine.seconds):.1f} trajectories/s")

    # Overlap: a tenth of the episodes hit a slow tool first; count engine calls made during that sleep.
    engine.call_times.clear()
    slow_rows = [dict(r, extra_info={"index": i}) for i, r in enumerate(rows[: max(episodes // 10, 10)])]
    fast_rows = rows[: max(episodes // 10, 10) * 9]
    start = time.perf_counter()
    slow_task = asyncio.ensure_future(asyncio.gather(*(loop.run(r, uid=f"s{i}-slow") for i, r in enumerate(slow_rows))))
    fast = await loop.run_batch(fast_rows, group_prefix="fast-")
    fast_done = time.perf_counter() - start
    slow = await slow_task
    slow_done = time.perf_counter() - start
    sleeps = tools["sleepy"].sleeps
    window = (min(a for a, _ in sleeps), max(b for _, b in sleeps))
    during = sum(1 for t in engine.call_times if window[0] < t < window[1])
    print(f"overlap: {len(slow)} episodes blocked {window[1] - window[0]:.2f}s on a {slow_tool_s}s tool; during that "
          f"window {during} engine calls of other episodes ran; {len(fast)} other episodes finished at "
          f"{fast_done:.2f}s, the slow ones at {slow_done:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--slow-tool-s", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(run(args.episodes, args.concurrency, args.slow_tool_s))


if __name__ == "__main__":
    main()
