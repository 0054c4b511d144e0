"""Parses per second of each tool-call format on typical assistant turns (the parser runs on every model turn).

    python benchmarks/parser_bench.py [--seconds 1.0]

Each format is timed on: a turn with text and two calls, a long turn (4 KB of text, one call with a 2 KB
argument), a plain answer without calls, a turn whose first call has broken JSON, and that turn repeated
1000 times (a degenerate generation: it must cost about 1000 times one turn, not more).
"""

from __future__ import annotations

import argparse
import time

from agentgym.parsers import get_parser

CALLS = [
    {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius", "days": [1, 2, 3]}},
    {"name": "search", "arguments": {"query": "best café \"near\" </tool_call> me", "filters": {"max": 3, "open": True}}},
]
LONG_CALLS = [{"name": "run_code", "arguments": {"language": "python", "code": "print('x')\n" * 180}}]
CONTENT = "Let me look that up for you."
LONG_CONTENT = "I will reason about this step by step. " * 100


def _turns(name: str) -> dict[str, str]:
    parser = get_parser(name)
    two_calls = parser.format(CALLS, content=CONTENT)
    broken = two_calls.replace('"city": "Zürich"', '"city" "Zürich"')
    if broken == two_calls:  # qwen3_coder writes no JSON: break its first value's closing tag instead
        broken = two_calls.replace("</parameter>", "", 1)
    return {
        "two calls": two_calls,
        "long turn": parser.format(LONG_CALLS, content=LONG_CONTENT),
        "no call": "The weather in Zürich is sunny, 21 degrees. " * 4,
        "broken JSON": broken,
        "1000 broken": broken * 1000,  # a degenerate, repeating generation
    }


def _rate(name: str, text: str, seconds: float) -> float:
    parser = get_parser(name)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            parser.parse(text)
        count += 100
    return count / elapsed


def main() -> None:
    cli = argparse.ArgumentParser(description="Tool-call parser throughput.")
    cli.add_argument("--seconds", type=float, default=1.0, help="time spent on each (format, turn) pair")
    seconds = cli.parse_args().seconds
    kinds = list(_turns("hermes"))
    print(f"{'format':<14}" + "".join(f"{kind:>16}" for kind in kinds) + "   (parses/s, one core)")
    for name in ("hermes", "llama3_json", "mistral", "mistral_v11", "mistral_v13", "qwen3_coder", "gpt-oss"):
        turns = _turns(name)
        print(f"{name:<14}" + "".join(f"{_rate(name, turns[kind], seconds):>16,.0f}" for kind in kinds))


if __name__ == "__main__":
    main()
