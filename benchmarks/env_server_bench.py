"""The environment server against in-process sessions: episodes/s at many concurrent sessions, and what one tool
call costs over HTTP on loopback.

    python benchmarks/env_server_bench.py [--episodes 1024] [--concurrency 256] [--calls 2000] [--rounds 2]

The engine answers instantly (replies tokenized with the real tokenizer), so the figures are the environment
layer's own cost: 4 assistant turns per episode, 3 calculator calls each. The server runs as its own process
(`python3 -m agentgym.services.environment`) on this machine, so on a small machine it competes with the client
for cores; in-process and remote runs alternate, so a ratio is measured under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agentgym.episode.episode import EpisodeLimits
from agentgym.episode.remote import RemoteEnvironment
from agentgym.episode.session import Session, SessionConfig
from agentgym.models import tiny_tokenizer
from agentgym.parsers import ParsedToolCall
from agentgym.rollout.agent_loop import AgentLoop, AgentLoopConfig
from agentgym.rollout.scripted_engine import ScriptedEngine
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import TOOL_CONFIG

ROOT = Path(__file__).resolve().parents[1]


def four_turn_script(conversation: str, session_id: str) -> str:
    done = conversation.count("<tool_response>")
    if done >= 3:
        return "The answer is \\boxed{42}."
    call = {"name": "calculator", "arguments": {"expression": f"{done + 1}*7"}}
    return f"Step {done + 1}.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"


def start_server() -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([sys.executable, "-m", "agentgym.services.environment", "--tools", str(TOOL_CONFIG),
                                "--port", "0", "--max-sessions", "4096"], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"ready at (http://\S+)", line)
        if found:
            return process, found.group(1)
    raise RuntimeError("the environment server did not start")


async def episodes_per_s(loop: AgentLoop, episodes: int) -> float:
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}]} for i in range(episodes)]
    start = time.perf_counter()
    trajectories = await loop.run_batch(rows)
    elapsed = time.perf_counter() - start
    failed = [t.error for t in trajectories if t.error]
    assert not failed and all(t.num_tool_calls == 3 for t in trajectories), failed[:3]
    return episodes / elapsed


async def per_call_s(session, calls: int) -> float:
    call = ParsedToolCall(name="calculator", arguments={"expression": "6*7"}, id="c", raw="", index=1)
    async with session:
        await session.run_calls([call])  # creates the instance
        start = time.perf_counter()
        for _ in range(calls):
            [result] = await session.run_calls([call])
            assert result.error is None
        return (time.perf_counter() - start) / calls


async def main(args: argparse.Namespace) -> None:
    process, url = start_server()
    try:
        tokenizer = tiny_tokenizer()
        tools = build_tools(load_tool_specs(TOOL_CONFIG))
        env = RemoteEnvironment.connect(url)
        config = AgentLoopConfig(limits=EpisodeLimits(max_assistant_turns=4), max_concurrent_episodes=args.concurrency)
        local = AgentLoop(ScriptedEngine(tokenizer, four_turn_script), tokenizer, tools, {}, config)
        remote = AgentLoop(ScriptedEngine(tokenizer, four_turn_script), tokenizer, {}, environment=env, config=config)
        await episodes_per_s(remote, 64)  # warm both paths (connections, template caches)
        await episodes_per_s(local, 64)
        figures: dict[str, list[float]] = {"in_process": [], "remote": [], "call_local": [], "call_remote": []}
        for _ in range(args.rounds):
            figures["in_process"].append(await episodes_per_s(local, args.episodes))
            figures["remote"].append(await episodes_per_s(remote, args.episodes))
            figures["call_local"].append(await per_call_s(Session(tools, session_id="bench-local"), args.calls))
            figures["call_remote"].append(await per_call_s(
                env.session(extra_info={}, session_id=f"bench-{len(figures['call_remote'])}", config=SessionConfig()),
                args.calls))
        await env.aclose()
    finally:
        process.terminate()
        process.wait()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores; "
          f"{args.episodes} episodes x 4 turns x 3 calls, {args.concurrency} concurrent")
    for name in ("in_process", "remote"):
        print(f"episodes/s {name:10s}: " + ", ".join(f"{v:.1f}" for v in figures[name]))
    ratio = [r / i for r, i in zip(figures["remote"], figures["in_process"])]
    print("remote / in-process: " + ", ".join(f"{v:.2f}" for v in ratio))
    local_us = [v * 1e6 for v in figures["call_local"]]
    remote_us = [v * 1e6 for v in figures["call_remote"]]
    print("one tool call, in-process (us): " + ", ".join(f"{v:.0f}" for v in local_us))
    print("one tool call, remote (us):     " + ", ".join(f"{v:.0f}" for v in remote_us))
    print(f"added per call (median, us): {statistics.median(r - i for r, i in zip(remote_us, local_us)):.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
