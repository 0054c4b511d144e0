"""The default quickstart task: arithmetic word problems with a tool (`python3 -m agentgym quickstart`).

`code_arith` (default) runs the model's code in the sandbox; `arithmetic` gives it the calculator. Registered as the
`arithmetic` task in pyproject's `agentgym.quickstart_tasks` entry points.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

import agentgym_envs.arithmetic as arithmetic
import agentgym_envs.code_arith as code_arith
from agentgym.interactions.registry import load_interactions
from agentgym.quickstart.job import Quickstart, QuickstartEnvironment, QuickstartSettings, question
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic.data import ArithmeticTaskConfig
from agentgym_envs.arithmetic.data import make_rows as calculator_rows
from agentgym_envs.arithmetic.solver import calculator_call, ideal_script

TRAIN_CONFIG = arithmetic.ENV_DIR / "quickstart.yaml"

ENVIRONMENTS = {
    "code_arith": QuickstartEnvironment(code_arith.TOOL_CONFIG, code_arith.make_rows, code_arith.code_call),
    "arithmetic": QuickstartEnvironment(arithmetic.TOOL_CONFIG, calculator_rows, calculator_call),
}


class ArithmeticQuickstart(Quickstart):
    """The main job on arithmetic rows, with the code interpreter (`code_arith`) or the calculator, and the
    "wrong, try again" teacher."""

    train_config = TRAIN_CONFIG
    options = frozenset({"environment", "model_size"})

    def __init__(self, settings: QuickstartSettings, console: Console):
        super().__init__(settings, console)
        if settings.environment not in ENVIRONMENTS:
            raise ValueError(f"unknown quickstart environment {settings.environment!r}; choose one of {sorted(ENVIRONMENTS)}")
        self.env = env = ENVIRONMENTS[settings.environment]
        self.tools = build_tools(load_tool_specs(env.tool_config))
        self.interactions = load_interactions(arithmetic.INTERACTION_CONFIG)
        task = dict(min_digits=settings.min_digits, max_digits=settings.max_digits, seed=settings.seed)
        self.eval_rows = env.make_rows(ArithmeticTaskConfig(num_rows=settings.eval_rows, split="test", **task))
        held_out = {question(row) for row in self.eval_rows}
        self.sft_rows = [r for r in env.make_rows(ArithmeticTaskConfig(num_rows=settings.sft_rows, split="sft", **task))
                         if question(r) not in held_out]
        self.train_rows = [r for r in env.make_rows(ArithmeticTaskConfig(num_rows=1024, split="train", **task))
                           if question(r) not in held_out]

    def demonstration_script(self, direct_rows: set[int]) -> Callable[[str, str | None], str]:
        return ideal_script(self.sft_rows, "sft-", self.env.make_call, direct_rows=direct_rows)
