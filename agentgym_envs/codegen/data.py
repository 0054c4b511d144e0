"""Procedurally generated function-writing tasks with hidden tests computed by reference implementations."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

SYSTEM_PROMPT = (
    "Write the requested Python function. You may test code with the code interpreter. "
    "Submit your final solution in a ```python code block."
)


@dataclass(frozen=True)
class Family:
    text: str
    reference: Callable[..., Any]
    make_args: Callable[[random.Random], tuple]


def _ints(rng: random.Random, n: int = 8) -> list[int]:
    return [rng.randint(-50, 50) for _ in range(rng.randint(0, n))]


def _families(k: int) -> list[Family]:
    return [
        Family(f"returns the sum of the elements of `xs` that are divisible by {k}",
               lambda xs: sum(x for x in xs if x % k == 0), lambda r: (_ints(r),)),
        Family(f"returns how many elements of `xs` are greater than {k}",
               lambda xs: sum(1 for x in xs if x > k), lambda r: (_ints(r),)),
        Family(f"returns `xs` with every element multiplied by {k}, in the same order",
               lambda xs: [x * k for x in xs], lambda r: (_ints(r),)),
        Family("returns the largest element of `xs` minus the smallest, or 0 when `xs` is empty",
               lambda xs: (max(xs) - min(xs)) if xs else 0, lambda r: (_ints(r),)),
        Family(f"returns the string `s` with every group of {k} characters reversed",
               lambda s: "".join(s[i:i + k][::-1] for i in range(0, len(s), k)),
               lambda r: ("".join(r.choice("abcdefgh") for _ in range(r.randint(0, 12))),)),
    ]


@dataclass(frozen=True)
class CodegenTaskConfig:
    num_rows: int = 32
    seed: int = 0
    num_tests: int = 6
    split: str = "train"


def make_rows(cfg: CodegenTaskConfig) -> list[dict[str, Any]]:
    """verl-layout rows; the hidden tests travel in `extra_info.interaction_kwargs.tests` as [args, expected]."""
    rng = random.Random(f"codegen-{cfg.split}-{cfg.seed}")
    rows = []
    for index in range(cfg.num_rows):
        k = rng.randint(2, 5)
        family = rng.choice(_families(k))
        arg = "s" if "`s`" in family.text else "xs"
        tests = []
        for _ in range(cfg.num_tests):
            args = family.make_args(rng)
            tests.append([list(args), family.reference(*args)])
        question = f"Write a Python function `solve({arg})` that {family.text}."
        rows.append({
            "data_source": "agentgym/codegen",
            "prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
            "ability": "code",
            "reward_model": {"style": "rule", "ground_truth": tests},
            "extra_info": {
                "split": cfg.split, "index": index,
                "interaction_kwargs": {"name": "unit_tests", "entry_point": "solve", "tests": tests},
            },
        })
    return rows


def main(argv: list[str] | None = None) -> None:
    """python -m agentgym_envs.codegen.data --out rows.jsonl [--rows N] [--seed S] [--split train]"""
    from agentgym_envs.data_cli import task_data_cli

    task_data_cli(
        make_rows,
        CodegenTaskConfig,
        prog="python -m agentgym_envs.codegen.data",
        description="write function-writing task rows (hidden tests included) in verl's dataset layout",
        argv=argv,
        suffixes=(".jsonl",),
        why=" (the hidden tests' values mix ints, lists and strings, which one Parquet column cannot hold)",
    )


if __name__ == "__main__":
    main()
