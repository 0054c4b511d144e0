"""Multi-digit arithmetic for a real pretrained instruct model (SmolLM2-135M-Instruct), with the code interpreter.

SmolLM2-135M-Instruct writes correct small Python programs but gets 3-4 digit products wrong from memory
("17 * 23 = 321"): a model that can code but not multiply is what a code interpreter is for. The questions are
bare expressions (products and sums of 2-4 digit numbers); each call runs the model's Python in the sandbox, and
the "wrong, try again" teacher (arithmetic's `math_feedback`) checks the `\\boxed{}` answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgym_envs.arithmetic import INTERACTION_CONFIG
from agentgym_envs.code_arith import TOOL_CONFIG

ENV_DIR = Path(__file__).resolve().parent
MODEL_NAME = "smollm2-135m-instruct"
SYSTEM_PROMPT = ("You are a careful assistant. Compute exactly with the code_interpreter tool (print the result), "
                 "then give the final answer as \\boxed{number}.")

_FORMS = ("{a} * {b}", "{a} * {b} + {c}", "{a} + {b} * {c}", "{a} * {b} - {c}")


@dataclass(frozen=True)
class SmolArithConfig:
    num_rows: int = 64
    seed: int = 0
    split: str = "train"
    min_digits: int = 3
    max_digits: int = 4
    system_prompt: str = SYSTEM_PROMPT


def _number(rng: random.Random, low: int, high: int) -> int:
    digits = rng.randint(low, high)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def make_rows(cfg: SmolArithConfig) -> list[dict[str, Any]]:
    """verl-layout rows: `What is 4821 * 37 + 905?` with the exact value as ground truth (seeded by split and seed)."""
    rng = random.Random(f"smollm_arith-{cfg.split}-{cfg.seed}")
    rows = []
    for index in range(cfg.num_rows):
        form = rng.choice(_FORMS)
        values = {"a": _number(rng, cfg.min_digits, cfg.max_digits), "b": _number(rng, 2, cfg.max_digits - 1),
                  "c": _number(rng, cfg.min_digits, cfg.max_digits)}
        expression = form.format(**values)
        answer = str(eval(expression, {"__builtins__": {}}))  # digits and + - * only: built above
        rows.append({
            "data_source": "agentgym/smollm_arith",
            "prompt": [{"role": "system", "content": cfg.system_prompt},
                       {"role": "user", "content": f"What is {expression}?"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": cfg.split, "index": index, "expression": expression,
                           "interaction_kwargs": {"name": "math_feedback", "ground_truth": answer}},
        })
    return rows


def code_call(expression: str) -> dict[str, Any]:
    """The ideal policy's call: a one-line program printing the expression's value."""
    return {"name": "code_interpreter", "arguments": {"code": f"print({expression})"}}


__all__ = ["ENV_DIR", "INTERACTION_CONFIG", "MODEL_NAME", "SYSTEM_PROMPT", "SmolArithConfig", "TOOL_CONFIG",
           "code_call", "make_rows"]
