"""Answer checking adopted from benchmarks/answer_check_bench.py: the exact numeric checker, with math-verify for
the LaTeX it cannot read; used by the math teacher, the answer-check tool and agentgym.rewards.math_answer."""

from __future__ import annotations

import asyncio

import pytest

from agentgym.interactions.math_feedback import MathFeedbackInteraction
from agentgym.rewards.math_answer import compute_score
from agentgym.answers.numeric import answers_match, extract_answer, response_matches


@pytest.mark.parametrize("response, truth, expected", [
    ("Therefore the total is \\boxed{1{,}234}.", "1234", True),  # the exact checker alone reads 234
    ("\\boxed{\\text{42}}", "42", True),
    ("so x = \\frac{7}{2}", "3.5", True),
    ("The answer is 1,234.", "1234", True),
    ("I first got $5$, but the final answer is $7$.", "5", False),
    ("\\boxed{-42}", "42", False),
    ("The answer is 43.", "42", False),
    ("Paris", "paris", True),
    ("no idea", "42", False),
])
def test_response_matches(response, truth, expected):
    assert response_matches(response, truth) is expected


def test_the_exact_checker_alone_misses_latex_grouping():
    """Why math-verify was adopted: this is the form the benchmark's exact checker rejected."""
    assert not answers_match(extract_answer("\\boxed{1{,}234}"), "1234")


def test_off_the_main_thread_math_verify_runs_without_its_alarm():
    assert asyncio.run(asyncio.to_thread(response_matches, "\\boxed{1{,}234}", "1234"))


async def test_the_math_teacher_accepts_a_latex_answer():
    teacher = MathFeedbackInteraction({"name": "math_feedback"})
    instance = await teacher.start_interaction(ground_truth="1234")
    done, _, reward, info = await teacher.generate_response(
        instance, [{"role": "assistant", "content": "Total: \\boxed{1{,}234}"}])
    assert done and reward == 1.0 and info["correct"]


def test_math_answer_reward():
    assert compute_score("src", "so \\boxed{1{,}234}", "1234") == 1.0
    assert compute_score("src", "it is 12", "1234", format_score=0.1) == 0.1
    assert compute_score("src", "no idea", "1234", format_score=0.1) == 0.0
