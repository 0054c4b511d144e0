"""A verl-style reward for math answers: `custom_reward_function.path=agentgym.rewards.math_answer`.

1.0 when the response states the ground truth (agentgym.answers.numeric.response_matches: the exact
numeric checker, with math-verify for LaTeX it cannot read), else 0.0; `format_score` is given instead of 0 to a
response that commits to some answer, as verl's gsm8k reward does.
"""

from __future__ import annotations

from typing import Any

from agentgym.answers.numeric import extract_answer, response_matches


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None,
                  format_score: float = 0.0) -> float:
    if response_matches(solution_str, str(ground_truth)):
        return 1.0
    return format_score if extract_answer(solution_str) is not None else 0.0
