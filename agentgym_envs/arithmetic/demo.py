"""`agentgym demo`: multi-turn episodes of the bundled arithmetic environment with a scripted policy, showing every
turn (tool calls, tool results, teacher feedback) and the rewards — the environment layer alone, in a second."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from agentgym.episode.session import Session
from agentgym.episode.episode import Episode, TextTurnSource, run_episode
from agentgym.interactions.registry import load_interactions
from agentgym.parsers import get_parser
from agentgym.tools.arithmetic import evaluate
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic import INTERACTION_CONFIG, TOOL_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows

_ROLE_STYLE = {"system": "dim", "user": "cyan", "assistant": "green", "tool": "magenta"}


class ScriptedArithmeticPolicy:
    """Guesses by rounding first (and is told it is wrong), then uses the calculator and answers exactly.

    It reads the task's expression from the row, which a model cannot: it exists to exercise the environment.
    """

    def __init__(self, expression: str):
        self.expression = expression

    async def __call__(self, messages: list[dict[str, Any]]) -> str:
        last = messages[-1]
        if last["role"] == "tool":
            return f"The calculator says {last['content']}. The answer is \\boxed{{{last['content']}}}."
        if any(m["role"] == "assistant" for m in messages):
            call = {"name": "calculator", "arguments": {"expression": self.expression}}
            return f"Let me compute it exactly.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
        guess = int(round(float(evaluate(self.expression)) * 1.01, -2))
        return f"Roughly {guess}, so \\boxed{{{guess}}}."


def _show(console: Console, index: int, episode: Episode) -> None:
    for message in episode.messages:
        body = message.get("content") or ""
        for call in message.get("tool_calls", []):
            body += f"\n→ {call['function']['name']}({call['function']['arguments']})"
        console.print(Panel(body.strip(), title=message["role"], title_align="left",
                            border_style=_ROLE_STYLE[message["role"]], width=min(console.width, 100)))
    console.print(
        f"episode {index}: reward {episode.reward:.2f} (teacher turn rewards {episode.turn_rewards}, "
        f"tool calls {len(episode.tool_results)}, finish: {episode.finish_reason})\n"
    )


async def _run(console: Console, seed: int, episodes: int) -> list[Episode]:
    tools = build_tools(load_tool_specs(TOOL_CONFIG))
    interactions = load_interactions(INTERACTION_CONFIG)
    parser = get_parser("hermes")
    results = []
    for index, row in enumerate(make_rows(ArithmeticTaskConfig(num_rows=episodes, seed=seed))):
        async with Session(tools, extra_info=row["extra_info"], interactions=interactions) as session:
            policy = TextTurnSource(ScriptedArithmeticPolicy(row["extra_info"]["expression"]))
            episode = await run_episode(session, policy, parser, row["prompt"])
        _show(console, index, episode)
        results.append(episode)
    return results


def run_demo(*, console: Console, seed: int = 0, episodes: int = 2) -> int:
    results = asyncio.run(_run(console, seed, episodes))
    table = Table(title="demo summary")
    for column in ("episode", "reward", "assistant turns", "tool calls", "finish"):
        table.add_column(column)
    for index, episode in enumerate(results):
        table.add_row(str(index), f"{episode.reward:.2f}", str(episode.assistant_turns), str(len(episode.tool_results)),
                      episode.finish_reason)
    console.print(table)
    return 0
