"""Procedurally generated arithmetic tasks as verl-format dataset rows (no downloads, seeded)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from agentgym.tools.arithmetic import evaluate, format_number

SYSTEM_PROMPT = "Use the calculator for arithmetic. Give the final answer as \\boxed{number}."

_TEMPLATES = [
    ("A warehouse holds {a} boxes with {b} items each. {c} items are shipped out. How many items remain?", "{a}*{b}-{c}"),
    ("A train travels {a} km per day for {b} days, then {c} km more. How many km in total?", "{a}*{b}+{c}"),
    ("{a} coins are shared equally among {b} people, and the remainder goes to charity. How many coins does each person get?", "{a}//{b}"),
    ("A factory makes {a} parts per hour. How many parts does it make in {b} hours, minus {c} defective ones?", "{a}*{b}-{c}"),
    ("What is ({a} + {b}) * {c}?", "({a}+{b})*{c}"),
]


@dataclass(frozen=True)
class ArithmeticTaskConfig:
    num_rows: int = 64
    seed: int = 0
    min_digits: int = 3
    max_digits: int = 5
    split: str = "train"
    system_prompt: str = SYSTEM_PROMPT


def _number(rng: random.Random, cfg: ArithmeticTaskConfig) -> int:
    digits = rng.randint(cfg.min_digits, cfg.max_digits)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def make_rows(cfg: ArithmeticTaskConfig) -> list[dict[str, Any]]:
    """Rows in verl's layout: prompt messages, reward_model.ground_truth, and the tools/interaction kwargs."""
    rng = random.Random(f"{cfg.split}-{cfg.seed}")
    rows = []
    for index in range(cfg.num_rows):
        question, formula = rng.choice(_TEMPLATES)
        values = {"a": _number(rng, cfg), "b": rng.randint(3, 99), "c": _number(rng, cfg)}
        expression = formula.format(**values)
        answer = format_number(evaluate(expression))
        rows.append(
            {
                "data_source": "agentgym/arithmetic",
                "prompt": [
                    {"role": "system", "content": cfg.system_prompt},
                    {"role": "user", "content": question.format(**values)},
                ],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": answer},
                "extra_info": {
                    "split": cfg.split,
                    "index": index,
                    "expression": expression,
                    "interaction_kwargs": {"name": "math_feedback", "ground_truth": answer},
                },
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """python -m agentgym_envs.arithmetic.data --out rows.parquet [--rows N] [--seed S] [--split train]"""
    from agentgym_envs.data_cli import task_data_cli

    task_data_cli(
        make_rows,
        ArithmeticTaskConfig,
        prog="python -m agentgym_envs.arithmetic.data",
        description="write arithmetic task rows in verl's dataset layout",
        argv=argv,
    )


if __name__ == "__main__":
    main()
