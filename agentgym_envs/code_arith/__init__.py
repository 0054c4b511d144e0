"""Arithmetic word problems solved with the code interpreter (the sandbox) instead of a calculator.

Same tasks and teacher as `agentgym_envs.arithmetic`; the tool is `code_interpreter`, so every call runs untrusted
model code in the isolated sandbox (embedded server unless the tool config names a URL).
"""

from pathlib import Path
from typing import Any

from agentgym_envs.arithmetic import INTERACTION_CONFIG
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig, make_rows as _make_rows

ENV_DIR = Path(__file__).resolve().parent
TOOL_CONFIG = ENV_DIR / "tools.yaml"
SYSTEM_PROMPT = "Use the code interpreter to compute exactly (print the result). Give the final answer as \\boxed{number}."


def make_rows(cfg: ArithmeticTaskConfig) -> list[dict[str, Any]]:
    from dataclasses import replace

    return _make_rows(replace(cfg, system_prompt=SYSTEM_PROMPT))


def code_call(expression: str) -> dict[str, Any]:
    """The ideal policy's call: a one-line program printing the expression's value."""
    return {"name": "code_interpreter", "arguments": {"code": f"print({expression})"}}


__all__ = ["ENV_DIR", "INTERACTION_CONFIG", "TOOL_CONFIG", "SYSTEM_PROMPT", "code_call", "make_rows"]
