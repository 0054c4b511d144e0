"""Extracting a final numeric answer from model text and comparing it with the ground truth exactly."""

from __future__ import annotations

import re
from fractions import Fraction

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is)?\s*[:=]?\s*([-+]?[\d,]*\.?\d+(?:/\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")


def parse_number(text: str) -> Fraction | None:
    """'1,234' -> 1234, '7/3' -> 7/3, '2.50' -> 5/2; None when the text is not a single number."""
    cleaned = text.strip().strip("$ ").replace(",", "").rstrip(".")
    if not cleaned:
        return None
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


_LATEX_SPACING = re.compile(r"\{,\}|\\[,!; ]|\\text\{\s*\}")


def states_a_number(answer: str | None) -> bool:
    """Whether an extracted answer is one number (LaTeX thousands separators allowed), not an expression
    such as `656 * 22 - 7053`: math-verify evaluates expressions, so on arithmetic tasks a policy learns to box
    the question itself (seen on SmolLM2, GPU run of 2026-12-07) unless the teacher asks for the number."""
    return answer is not None and parse_number(_LATEX_SPACING.sub("", answer)) is not None


def extract_answer(text: str) -> str | None:
    """The answer a response commits to: \\boxed{...}, else an 'Answer: X' line, else the last number."""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    lines = _ANSWER_LINE.findall(text)
    if lines:
        return lines[-1]
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def answers_match(candidate: str | None, ground_truth: str, *, rel_tol: float = 0.0) -> bool:
    """Exact rational comparison (optionally with a relative tolerance for decimal ground truths)."""
    if candidate is None:
        return False
    got, want = parse_number(candidate), parse_number(str(ground_truth))
    if got is None or want is None:
        return candidate.strip().lower() == str(ground_truth).strip().lower()
    if rel_tol == 0.0:
        return got == want
    return abs(got - want) <= rel_tol * max(abs(want), Fraction(1))


_LATEX_MARKERS = ("\\", "{", "$")


def response_matches(response: str, ground_truth: str) -> bool:
    """Whether a whole response states the ground truth: this module's exact checker first (tens of
    microseconds), math-verify where the response holds LaTeX that it cannot read (\\boxed{1{,}234},
    \\text{...}, \\frac). Measured in benchmarks/answer_check_bench.py (RESULTS.md, "Answer checking")."""
    if answers_match(extract_answer(response), ground_truth) or answers_match(response, ground_truth):
        return True
    if not any(marker in response for marker in _LATEX_MARKERS):
        return False
    return math_verify_matches(response, ground_truth)


def math_verify_matches(response: str, ground_truth: str) -> bool:
    """math-verify's verdict. Its time limits use SIGALRM, which only the main thread may set: elsewhere (reward
    threads, Ray actors' worker threads) it runs without them."""
    import threading

    from math_verify import parse, verify

    limit = 5 if threading.current_thread() is threading.main_thread() else None
    gold = parse(str(ground_truth), parsing_timeout=limit)
    if not gold:
        return False
    return bool(verify(gold, parse(response, parsing_timeout=limit), timeout_seconds=limit))
