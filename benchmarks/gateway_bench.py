"""What the gateway adds over the in-process agent loop: the same 4-turn, 3-tool-call conversations, once through
the agent loop and once by `openai.AsyncOpenAI` agents against the gateway (tools run client-side).

    python benchmarks/gateway_bench.py [--episodes 512] [--concurrency 64] [--rounds 2]

The engine answers instantly (replies tokenized with the real tokenizer), so the figures are the serving and
recording cost: HTTP, the openai client, OpenAI <-> internal messages, delta rendering and the re-render check.
The gateway runs in this process's event loop, as it does inside a trainer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from openai import AsyncOpenAI

from agentgym.episode.episode import EpisodeLimits
from agentgym.models import tiny_tokenizer
from agentgym.parsers import get_parser
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.services.gateway.recorder import RecorderConfig, TrajectoryRecorder
from agentgym.services.gateway.server import Gateway
from agentgym.services.serving import start_server
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import TOOL_CONFIG
from agentgym_envs.arithmetic.openai_agent import CALCULATOR, calculator


def four_turn_script(conversation: str, session_id: str) -> str:
    done = conversation.count("<tool_response>")
    if done >= 3:
        return "The answer is \\boxed{42}."
    call = {"name": "calculator", "arguments": {"expression": f"{done + 1}*7"}}
    return f"Step {done + 1}.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"


async def agent(client: AsyncOpenAI, prompt: list[dict], session: str) -> None:
    messages = list(prompt)
    for _ in range(8):
        reply = await client.chat.completions.create(model="p", messages=messages, tools=[CALCULATOR],
                                                     extra_headers={"X-Session-Id": session})
        msg = reply.choices[0].message
        messages.append(msg.model_dump(exclude_none=True))
        if not msg.tool_calls:
            return
        for call in msg.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": calculator(**json.loads(call.function.arguments))})


async def main(args: argparse.Namespace) -> None:
    tokenizer = tiny_tokenizer()
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}]} for i in range(args.episodes)]
    loop = AgentLoop(ScriptedEngine(tokenizer, four_turn_script), tokenizer, build_tools(load_tool_specs(TOOL_CONFIG)), {},
                     AgentLoopConfig(limits=EpisodeLimits(max_assistant_turns=8), max_concurrent_episodes=args.concurrency))
    recorder = TrajectoryRecorder(ScriptedEngine(tokenizer, four_turn_script), tokenizer, get_parser("hermes"),
                                  RecorderConfig())
    server = await start_server(Gateway(recorder).app())
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    limiter = asyncio.Semaphore(args.concurrency)

    async def one(i: int, tag: str) -> None:
        async with limiter:
            await agent(client, rows[i]["prompt"], f"{tag}-{i}")

    async def through_gateway(tag: str) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(one(i, tag) for i in range(args.episodes)))
        elapsed = time.perf_counter() - start
        traj = recorder.trajectory(f"{tag}-0")
        assert traj is not None and sum(s.role == "assistant" for s in traj.turns) == 4
        recorder.sessions.clear()
        return args.episodes / elapsed

    async def in_process() -> float:
        start = time.perf_counter()
        trajectories = await loop.run_batch(rows)
        assert all(t.num_tool_calls == 3 for t in trajectories)
        return args.episodes / (time.perf_counter() - start)

    await through_gateway("warm")
    figures: dict[str, list[float]] = {"agent loop": [], "gateway": []}
    for r in range(args.rounds):
        figures["agent loop"].append(await in_process())
        figures["gateway"].append(await through_gateway(f"r{r}"))
    await client.close()
    await server.stop()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.episodes} episodes x 4 turns x 3 calls, "
          f"{args.concurrency} concurrent")
    for name, values in figures.items():
        print(f"episodes/s {name:10s}: " + ", ".join(f"{v:.1f}" for v in values))
    # One process, CPU-bound: 1 / throughput is the CPU time of an episode, client and gateway together.
    per_turn = [(1 / g - 1 / a) * 1e3 / 4 for a, g in zip(figures["agent loop"], figures["gateway"])]
    print("added CPU time per model turn, agent + gateway (ms): " + ", ".join(f"{v:.2f}" for v in per_turn))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
