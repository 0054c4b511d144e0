"""The calculator and answer-check tools, driven through their real async lifecycle."""

from fractions import Fraction
import re

import pytest

from agentgym.tools.arithmetic import ExpressionError, evaluate, format_number
from agentgym.tools.registry import build_tools, load_tool_specs
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("12345678901234*98765", "1219320976680376010"),
        ("(3+4)*5 - 2^3", "27"),
        ("7/3", "7/3 (≈ 2.333333333)"),
        ("sqrt(144) + abs(-2)", "14"),
        ("10 // 3 + 10 % 3", "4"),
        ("2**-2", "1/4 (≈ 0.25)"),
    ],
)
def test_evaluates_exactly(expression, expected):
    assert format_number(evaluate(expression)) == expected


@pytest.mark.parametrize(
    "expression, message",
    [
        ("__import__('os')", "unknown function `__import__`"),
        ("__import__('os').system('id')", "is not arithmetic"),
        ("().__class__", "is not arithmetic"),
        ("1/0", "division by zero"),
        ("9**9**9", "exponent 387420489 is too large"),
        ("10**5000", "more than 2000 digits"),
        ("1 +", "cannot parse `1 +`"),
        ("a" * 3000, "longer than 2000 characters"),
    ],
)
def test_rejects_what_is_not_safe_arithmetic(expression, message):
    with pytest.raises(ExpressionError, match=re.escape(message)):
        evaluate(expression)


def test_fraction_results_stay_exact():
    assert evaluate("1/3 + 1/6") == Fraction(1, 2)


async def test_calculator_tool_lifecycle():
    tool = build_tools(load_tool_specs(REPO / "tool_configs/calculator.yaml"))["calculator"]
    instance_id, _ = await tool.create()
    response, reward, metrics = await tool.execute(instance_id, {"expression": "2**100"})
    assert response.text == str(2**100) and metrics == {"ok": True} and reward == 0.0
    response, _, metrics = await tool.execute(instance_id, {"expression": "open('/etc/passwd')"})
    assert response.text.startswith("Error: unknown function `open`") and metrics == {"ok": False}
    await tool.release(instance_id)


async def test_answer_check_tool_scores_and_limits_submissions():
    tool = build_tools(load_tool_specs(REPO / "tool_configs/answer_check.yaml"))["check_answer"]
    instance_id, _ = await tool.create("episode-1", ground_truth="1,234")
    wrong, _, _ = await tool.execute(instance_id, {"answer": "1233"})
    assert wrong.text == "Incorrect. 2 submission(s) left."
    assert await tool.calc_reward(instance_id) == 0.0
    right, _, _ = await tool.execute(instance_id, {"answer": "1234.0"})
    assert right.text == "Correct."
    assert await tool.calc_reward(instance_id) == 1.0
    after, _, _ = await tool.execute(instance_id, {"answer": "1"})
    assert after.text == "No more submissions accepted (3 allowed)."
    await tool.release(instance_id)
    assert await tool.calc_reward(instance_id) == 0.0


async def test_answer_check_tool_needs_ground_truth():
    tool = build_tools(load_tool_specs(REPO / "tool_configs/answer_check.yaml"))["check_answer"]
    with pytest.raises(ValueError, match=r"needs `ground_truth` in extra_info.tools_kwargs.check_answer.create_kwargs"):
        await tool.create()
